"""The one adapter interface every method implements, and the method registry.

A method is a :class:`Method` subclass with a config dataclass, registered by name::

    @register("lora")
    class LoRA(Method):
        config_cls = LoRAConfig
        def attach(self, backbone): ...

Lifecycle: ``method = create_method("lora", rank=8)``; ``method.attach(backbone)`` inserts
the method's modules into the (frozen) timm model; the trainer optimises
``method.trainable_parameters()`` plus the head, and calls the hooks ``on_train_start``,
``on_epoch_start``, ``on_epoch_end``. ``method.merge()`` folds the update into the backbone
weights where the method allows it. ``save_adapter``/``load_adapter`` write and read only
what the method trains (plus the head), and ``method.stored_bytes()`` is the payload of
exactly what ``save_adapter`` writes for the method (head excluded).

Stored configs (records, adapter files) hold every key their code had. When a key is added
to change a method's behaviour, its config class names in ``legacy`` the value that gives
the behaviour from before the key; :func:`complete_stored_config` fills a stored config
that lacks the key with it, so an old record reruns as it ran, never with the new default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from heartbench.backbones import Backbone
from heartbench.errors import UserError, closest, one_of


class NotMergeable(Exception):
    """The method's update cannot be folded into the backbone weights."""


class MethodNameTaken(ValueError):
    """``register`` was given a name another method already has."""


@dataclass
class MethodConfig:
    """Base class of every method's config; subclasses add fields with defaults."""

    # Values for keys missing from configs stored before the key existed: what reproduces
    # the old behaviour (the dataclass default is what new runs get). Subclasses extend it.
    legacy: ClassVar[dict[str, Any]] = {}
    # Keys added after records were committed, with the value that gives the config from
    # before them: a run's identity leaves such a key out while it holds that value
    # (identity_config), so a suite that keeps the old behaviour keeps its run ids; a stored
    # config that lacks one is completed with it (``legacy`` first).
    added: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UserError for impossible values (override; call super)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "method config") -> MethodConfig:
        """Build from user values, rejecting unknown keys and wrong types in one line."""
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise UserError(
                    f"{where}: unknown key {key!r}{closest(key, known)}; allowed: {', '.join(known)}"
                )
            _check_type(where, key, value, known[key].default)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{where}: key {key!r} must be a finite number, got {value}")
        try:
            return cls(**values)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None


def _check_type(where: str, key: str, value: Any, default: Any) -> None:
    """Reject values whose type cannot stand in for the field's default's type."""
    if default is None or isinstance(default, type(dataclass)):
        return
    expected = type(default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if expected is bool:
        ok = isinstance(value, bool)
    if not ok:
        raise UserError(
            f"{where}: key {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )


def require(condition: bool, message: str) -> None:
    """Raise a UserError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


class Method:
    """Base class: a PETL method attached to one backbone."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    mergeable: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        self.backbone: Backbone | None = None
        # name -> module holding this method's trainable state (inside the backbone model)
        self.modules: dict[str, nn.Module] = {}

    # -- attaching -------------------------------------------------------------
    def attach(self, backbone: Backbone) -> None:
        """Insert this method's modules into ``backbone.model`` (frozen already)."""
        raise NotImplementedError

    def check_backbone(self, backbone: Backbone) -> None:
        """Raise UserError if the config is impossible on this backbone (e.g. ne >= heads)."""

    def match_mode(self) -> None:
        """Put this method's modules in the backbone model's train/eval mode.

        Modules built by ``attach`` start in training mode (PyTorch's default) even when the
        model is in eval mode, so their dropout would be active; ``attach`` calls this last.
        """
        assert self.backbone is not None
        for module in self.modules.values():
            module.train(self.backbone.model.training)

    # -- training --------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates for this method (the head is added by the trainer)."""
        return [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def on_train_start(self, epochs: int, warmup_epochs: int, steps_per_epoch: int) -> None:
        """Called once before the first epoch."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch's optimisation steps (0-based)."""

    def on_optimizer_step(self, lr: float) -> None:
        """Called after each optimiser step, with the learning rate that step used."""

    def nominal_state(self) -> None:
        """Put an untrained method in the shape its stored size is reported for.

        Most methods store the same tensors before and after training; Heart-LoRA drops
        masked heads, so it applies a mask of its configured size here.
        """

    def unfulfilled(self) -> str | None:
        """After training: why the method is not in the state its config promises (e.g. a
        Heart-LoRA mask that was never applied), or None. The trainer fails such a run."""
        return None

    def record_extras(self) -> dict[str, Any]:
        """JSON-able facts for the run record (e.g. Heart-LoRA's scores and mask)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor training state a checkpoint must carry to resume exactly."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # -- inference -------------------------------------------------------------
    def merge(self) -> None:
        """Fold the update into the backbone weights and remove the adapter modules."""
        raise NotMergeable(f"{self.name} cannot be merged into the backbone")

    # -- storage ---------------------------------------------------------------
    def stored_state(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors written for this method (head excluded)."""
        state: dict[str, torch.Tensor] = {}
        for prefix, module in self.modules.items():
            # A module may define its own storage (packed bits, dropped rows).
            own = module.stored_state() if hasattr(module, "stored_state") else module.state_dict()
            for key, value in own.items():
                state[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
        return state

    def load_stored(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`stored_state`."""
        for prefix, module in self.modules.items():
            own = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            if hasattr(module, "load_stored_state"):
                module.load_stored_state(own)
            else:
                module.load_state_dict(own)

    def stored_metadata(self) -> dict[str, str]:
        """Small strings needed to read the stored tensors back (not counted as payload)."""
        return {}

    def load_metadata(self, metadata: dict[str, str]) -> None:
        """Apply what :meth:`stored_metadata` wrote, before :meth:`load_stored`."""

    def stored_bytes(self) -> int:
        """Bytes of tensor payload that :func:`save_adapter` writes for this method."""
        return tensor_bytes(self.stored_state())


def tensor_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


# ---------------------------------------------------------------------------
# Wrapping a frozen Linear with updates on slices of its output
# ---------------------------------------------------------------------------
class Delta(nn.Module):
    """An update of one output slice of a Linear.

    Activation deltas implement ``forward(x)`` (added to the slice of the output);
    weight deltas set ``on_weight = True`` and implement ``delta_weight()`` (added to the
    slice of the weight before the matmul, which saves a second matmul). Every delta
    implements ``delta_weight()`` so it can be merged.
    """

    on_weight: ClassVar[bool] = False

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` plus method deltas on slices of its output features."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.deltas = nn.ModuleDict()
        self.slices: dict[str, tuple[int, int]] = {}

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def add(self, name: str, delta: Delta, start: int, stop: int) -> None:
        self.deltas[name] = delta
        self.slices[name] = (start, stop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.base.weight, self.base.bias
        on_weight = sorted((self.slices[n][0], n) for n, d in self.deltas.items() if d.on_weight)
        if on_weight and not (weight.requires_grad or (bias is not None and bias.requires_grad)):
            # Frozen base: only the updated slices need a weight gradient (see the Function).
            slices = tuple(self.slices[n] for _, n in on_weight)
            modules = [self.deltas[n] for _, n in on_weight]
            # Deltas that say so are recomputed in backward rather than kept per layer.
            again = tuple(d.delta_weight if getattr(d, "recompute_weight", False) else None
                          for d in modules)
            deltas = [d.delta_weight() for d in modules]
            out = _SliceDeltaLinear.apply(x, weight, bias, slices, again, *deltas)
        elif on_weight:
            # Rebuild the weight from untouched rows and updated slices (no in-place on a leaf).
            pieces, cursor = [], 0
            for start, n in on_weight:
                stop = self.slices[n][1]
                pieces += [weight[cursor:start], weight[start:stop] + self.deltas[n].delta_weight()]
                cursor = stop
            pieces.append(weight[cursor:])
            out = F.linear(x, torch.cat(pieces, dim=0), bias)
        else:
            out = F.linear(x, weight, bias)
        for n, delta in self.deltas.items():
            if not delta.on_weight:
                # In place on the matmul output (F.linear's backward does not need it), one
                # delta at a time so that only one delta output is alive at once.
                out = _AddToSlice.apply(out, self.slices[n], delta(x))
        return out

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base Linear with every delta folded into its weight."""
        for name, delta in self.deltas.items():
            start, stop = self.slices[name]
            self.base.weight[start:stop] += delta.delta_weight().to(self.base.weight.dtype)
        return self.base


class _AddToSlice(torch.autograd.Function):
    """``out[..., start:stop] += y`` in place, with a pass-through backward.

    Why not autograd's own in-place add on a slice: its backward (CopySlices) clones the
    whole output gradient for every slice written (an N x 3d copy per q/v delta per layer)
    and copies the slice back. Here ``out``'s gradient passes through untouched and ``y``'s
    gradient is a view of its slice of it: same values, no copies.
    """

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, rows: tuple[int, int], y: torch.Tensor
                ) -> torch.Tensor:
        out[..., rows[0]:rows[1]] += y
        ctx.mark_dirty(out)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        start, stop = ctx.rows
        return grad, None, grad[..., start:stop]


class _SliceDeltaLinear(torch.autograd.Function):
    """``F.linear(x, W', b)`` with ``W'`` = frozen ``W`` plus weight deltas on row slices.

    Why not autograd through ``torch.cat`` + ``F.linear``: that computes the gradient of the
    whole ``W'`` (``grad_out^T @ x``, a d_out x d_in x tokens matmul) and then throws away
    the rows no delta touches. For FourierFT on q and v of a fused qkv that is a third of
    the weight-gradient work (the k rows) for nothing. Here the backward multiplies only the
    updated slices' columns of ``grad_out``; the input gradient and the forward are the same
    matmuls as before.

    Memory: ``W'`` is not kept for backward (a d_out x d_in copy per layer, 7 MB on ViT-B's
    qkv); backward rebuilds it from the frozen ``W`` and the deltas, each either kept or, if
    its ``recompute`` callable is given, computed again (FourierFT: one small inverse FFT).
    Under autocast the operands are cast as autocast's ``linear`` would (to the autocast
    dtype), so results match it.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                slices: tuple[tuple[int, int], ...],
                recompute: tuple[Callable[[], torch.Tensor] | None, ...],
                *deltas: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        full = _with_deltas(weight, slices, deltas)
        if dtype is not None:
            x, full = x.to(dtype), full.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device_type=device, enabled=False):
            out = F.linear(x, full, bias)
        kept = [d for d, again in zip(deltas, recompute) if again is None]
        ctx.save_for_backward(x, weight, *kept)
        ctx.slices, ctx.recompute, ctx.dtype = slices, recompute, dtype
        ctx.delta_dtypes = [d.dtype for d in deltas]
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, *kept = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            stored = iter(kept)
            with torch.no_grad():
                deltas = [next(stored) if again is None else again() for again in ctx.recompute]
            full = _with_deltas(weight, ctx.slices, deltas)
            full = full.to(ctx.dtype) if ctx.dtype is not None else full
            grad_x = grad_out.to(full.dtype) @ full
            del full, deltas
        rows = grad_out.reshape(-1, grad_out.shape[-1]).to(x.dtype)
        inputs = x.reshape(-1, x.shape[-1])
        grads = []
        for i, ((start, stop), dtype) in enumerate(zip(ctx.slices, ctx.delta_dtypes)):
            if ctx.needs_input_grad[5 + i]:
                grads.append((rows[:, start:stop].t() @ inputs).to(dtype))
            else:
                grads.append(None)
        return (grad_x, None, None, None, None, *grads)


def _with_deltas(weight: torch.Tensor, slices: tuple[tuple[int, int], ...],
                 deltas: Iterable[torch.Tensor]) -> torch.Tensor:
    """A new tensor: ``weight`` with each delta added to its row slice (slices sorted)."""
    pieces, cursor = [], 0
    for (start, stop), delta in zip(slices, deltas):
        pieces += [weight[cursor:start], weight[start:stop] + delta.to(weight.dtype)]
        cursor = stop
    pieces.append(weight[cursor:])
    return torch.cat(pieces, dim=0)


def wrap_linear(parent: nn.Module, attr: str) -> AdaptedLinear:
    """Replace ``parent.attr`` (a Linear) by an :class:`AdaptedLinear`; idempotent."""
    current = getattr(parent, attr)
    if isinstance(current, AdaptedLinear):
        return current
    if not isinstance(current, nn.Linear):
        raise TypeError(f"{type(parent).__name__}.{attr} is {type(current).__name__}, not Linear")
    wrapped = AdaptedLinear(current)
    setattr(parent, attr, wrapped)
    return wrapped


def unwrap_linear(parent: nn.Module, attr: str) -> None:
    """Merge every delta of ``parent.attr`` and put the plain Linear back."""
    current = getattr(parent, attr)
    if isinstance(current, AdaptedLinear):
        setattr(parent, attr, current.merged())


QKV_SLICES = {"q": 0, "k": 1, "v": 2}


def qkv_slice(target: str, dim: int) -> tuple[int, int]:
    """Output rows of timm's fused qkv that belong to q, k, v, or the whole 'qkv'."""
    if target == "qkv":
        return 0, 3 * dim
    index = QKV_SLICES[target]
    return index * dim, (index + 1) * dim


def parse_targets(targets: str, where: str = "targets") -> list[str]:
    """'qv' -> ['q', 'v']; 'qkv' -> ['qkv'] (one update on the whole fused projection)."""
    if targets == "qkv":
        return ["qkv"]
    if not targets or any(t not in QKV_SLICES for t in targets) or len(set(targets)) != len(targets):
        raise UserError(f"{where}: {targets!r} is not valid; expected 'qv', 'q', 'v', 'qk', 'kv' or 'qkv'")
    return list(targets)


class QKVMethod(Method):
    """A method that adds one :class:`Delta` per target slice of every site's fused qkv.

    Subclasses set ``config.targets`` and implement :meth:`make_delta`; attaching, merging
    and the module names (``layer<i>.<target>``) are shared.
    """

    mergeable = True

    def make_delta(self, d_in: int, d_out: int) -> Delta:
        raise NotImplementedError

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        for site in backbone.sites:
            qkv = wrap_linear(site.attn, "qkv")
            for target in parse_targets(self.config.targets):
                start, stop = qkv_slice(target, site.dim)
                delta = self.make_delta(site.dim, stop - start)
                delta.to(qkv.base.weight.device)
                qkv.add(f"{self.name}_{target}", delta, start, stop)
                self.modules[f"layer{site.layer}.{target}"] = delta
        self.match_mode()

    def merge(self) -> None:
        assert self.backbone is not None
        for site in self.backbone.sites:
            unwrap_linear(site.attn, "qkv")
        self.modules = {}


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------
METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            owner = METHODS[name]
            raise MethodNameTaken(f"method name {name!r} is taken (by {owner.__module__}."
                                  f"{owner.__qualname__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def get_method_class(name: str) -> type[Method]:
    import heartbench.adapters  # noqa: F401  (imports every method module: fills METHODS)

    if name not in METHODS:  # perhaps an installed package's (entry point heartbench.methods)
        from heartbench.plugins import load_entry_points

        load_entry_points()
    if name not in METHODS:
        raise one_of("method", name, METHODS)
    return METHODS[name]


def complete_stored_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A stored config of method ``name`` with each missing legacy key set to its legacy
    value (see the module docstring); keys present are kept. A new dict."""
    cls = get_method_class(name).config_cls
    old = {**cls.added, **cls.legacy}
    return {**{k: v for k, v in old.items() if k not in config}, **config}


def identity_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that enters a run's identity: every key but the
    ``added`` ones that hold the value from before they existed (MethodConfig.added)."""
    added = get_method_class(name).config_cls.added
    return {k: v for k, v in config.items() if not (k in added and v == added[k])}


def create_method(name: str, config: dict[str, Any] | None = None, **overrides: Any) -> Method:
    """Build a method by registry name from a plain dict of config values."""
    cls = get_method_class(name)
    values = {**(config or {}), **overrides}
    return cls(cls.config_cls.from_dict(values, where=f"method {name!r}"))


# ---------------------------------------------------------------------------
# Saving and loading what a method trains
# ---------------------------------------------------------------------------
def save_adapter(method: Method, path: str | Path) -> int:
    """Write the method's stored state and the head to a safetensors file.

    Returns the method's payload bytes (head excluded), computed from the tensors written.
    """
    from safetensors.torch import save_file

    assert method.backbone is not None, "attach the method before saving"
    state = method.stored_state()
    head = {f"head.{k}": v.detach().cpu().contiguous()
            for k, v in method.backbone.head.state_dict().items()}
    metadata = {
        "heartbench.method": method.name,
        "heartbench.config": json.dumps(method.config.to_dict(), sort_keys=True),
        **{f"heartbench.{k}": v for k, v in method.stored_metadata().items()},
    }
    from heartbench.plugins import plugin_of

    plugin = plugin_of(method.name)
    if plugin is not None:  # load_adapter imports it (unchanged) before building the method
        metadata["heartbench.plugin"] = json.dumps(plugin.to_dict(), sort_keys=True)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({**{f"adapter.{k}": v for k, v in state.items()}, **head}, str(tmp), metadata)
    tmp.replace(path)
    return tensor_bytes(state)


def load_adapter(path: str | Path, backbone: Backbone) -> Method:
    """Re-create the method stored in ``path`` on ``backbone`` (same architecture)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"adapter file {path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "heartbench.method" not in metadata:
        raise UserError(f"adapter file {path} was not written by heartbench (no method metadata)")
    name = metadata["heartbench.method"]
    if "heartbench.plugin" in metadata:
        from heartbench.plugins import ensure_plugin

        ensure_plugin(json.loads(metadata["heartbench.plugin"]))
    method = create_method(name, complete_stored_config(
        name, json.loads(metadata["heartbench.config"])))
    method.attach(backbone)
    method.match_mode()  # a loaded adapter on an eval model must not run its dropout
    method.load_metadata({k[len("heartbench."):]: v for k, v in metadata.items()
                          if k.startswith("heartbench.")})
    method.load_stored({k[len("adapter."):]: v for k, v in tensors.items()
                        if k.startswith("adapter.")})
    backbone.head.load_state_dict({k[len("head."):]: v for k, v in tensors.items()
                                   if k.startswith("head.")})
    return method


def iter_deltas(method: Method) -> Iterator[tuple[str, Delta]]:
    for name, module in method.modules.items():
        if isinstance(module, Delta):
            yield name, module
