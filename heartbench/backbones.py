"""timm backbones: build, load local weights, reset the head, expose the attention sites.

Adapters never look inside a timm model themselves: they get a :class:`Backbone` whose
``sites`` list every transformer block's attention (the fused ``qkv`` Linear, head count,
stage), so the same adapter code runs on ViT and Swin.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from heartbench.errors import UserError, message, one_of, what_is

# Small named configurations: the CPU twin's backbones and tiny models for tests.
# Each maps to a timm architecture plus keyword arguments for ``timm.create_model``.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # 12 heads so head masking has the paper's granularity; 32-px input, patch 4 -> 64 tokens.
    # Width 96 (head dim 8) rather than 192: pretraining must fit ~30 min on 2 shared CPU
    # cores (`heartbench pretrain`), and 192 wide costs 4x the FLOPs (~1 GFLOP/image/step).
    "vit_mini": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=4, embed_dim=96, depth=6, num_heads=12),
    ),
    # Hierarchical: 3 stages with Swin-B's first three head counts (4, 8, 16), on 8x8, 4x4,
    # 2x2 token grids (patch 4; the last stage's window shrinks to its 2x2 grid). Sized so
    # pretraining fits the CPU budget and the fp32 checkpoint stays under 10 MB.
    "swin_mini": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, patch_size=4, window_size=4, embed_dim=64,
             depths=(2, 2, 2), num_heads=(4, 8, 16)),
    ),
    # Tiny models for unit tests (seconds on a CPU).
    "vit_test": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=12),
    ),
    "swin_test": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, patch_size=4, window_size=4, embed_dim=16,
             depths=(1, 1, 1), num_heads=(2, 4, 8)),
    ),
}

WEIGHT_SUFFIXES = (".npz", ".pth", ".pt", ".bin", ".safetensors")


@dataclass(eq=False)
class AttentionSite:
    """One multi-head attention module of the backbone, as adapters see it."""

    layer: int  # global block index, 0-based, in forward order
    stage: int  # 0 for ViT; the Swin stage
    block: nn.Module
    attn: nn.Module
    num_heads: int

    @property
    def qkv(self) -> nn.Module:
        """The fused q/k/v projection (possibly already wrapped by an adapter)."""
        return self.attn.qkv

    @property
    def dim(self) -> int:
        return self.base_qkv.in_features

    @property
    def head_dim(self) -> int:
        return self.base_qkv.out_features // 3 // self.num_heads

    @property
    def base_qkv(self) -> nn.Linear:
        qkv = self.attn.qkv
        return qkv.base if hasattr(qkv, "base") else qkv


@dataclass(eq=False)
class Backbone:
    """A timm model with a fresh classification head and its attention sites."""

    model: nn.Module
    name: str
    arch: str  # "vit" or "swin"
    num_classes: int
    weights: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    sites: list[AttentionSite] = field(default_factory=list)

    @property
    def head(self) -> nn.Linear:
        head = self.model.get_classifier()
        return head

    @property
    def input_size(self) -> int:
        """Side of the square input image the model expects."""
        size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        if size is not None:
            return int(size[0] if isinstance(size, (tuple, list)) else size)
        return int(self.model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def describe(self) -> dict[str, Any]:
        """What a record needs to rebuild this backbone ("pre_logits" only when it has one)."""
        out = {"name": self.name, "weights": self.weights, "kwargs": dict(self.kwargs)}
        if has_pre_logits(self.model):
            out["pre_logits"] = True
        return out


# ---------------------------------------------------------------------------
# The representation layer of the paper's ViT-B/16 (timm 0.4.x ``representation_size``)
# ---------------------------------------------------------------------------
class PreLogits(nn.Module):
    """timm 0.4.x's ``pre_logits``: Linear(dim, dim) + tanh on the pooled class token.

    The reference pipelines (PETL-ViT, FacT, RepAdapter) create
    ``vit_base_patch16_224_in21k`` with timm 0.4.x and no ``num_classes``, so the model keeps
    this layer (``representation_size=768``) and loads it from the .npz
    (``pre_logits/kernel``, ``pre_logits/bias``); timm 1.x's ViT has none. Its parameters
    are named ``pre_logits.fc.weight`` / ``pre_logits.fc.bias`` as in timm 0.4.x.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


def _pre_logits_hook(layer: nn.Module, module: nn.Module, args: tuple, out: torch.Tensor
                     ) -> torch.Tensor:
    """Forward hook on timm's ``fc_norm`` (after pooling, before ``head_drop``/``head``)."""
    return layer(out)


def add_pre_logits(model: nn.Module) -> None:
    """Give a timm ViT the representation layer: ``model.pre_logits`` applied to the pooled
    features, after the final norm and before the head (a hook on ``model.fc_norm``)."""
    if not (hasattr(model, "blocks") and hasattr(model, "fc_norm")):
        raise UserError(f"backbone.pre_logits: only a ViT has a representation layer, not"
                        f" {type(model).__name__}")
    layer = PreLogits(model.embed_dim)
    model.add_module("pre_logits", layer)
    model.fc_norm.register_forward_hook(functools.partial(_pre_logits_hook, layer))


def has_pre_logits(model: nn.Module) -> bool:
    return isinstance(getattr(model, "pre_logits", None), PreLogits)


def resolve_name(name: str) -> tuple[str, dict[str, Any]]:
    """A preset or timm model name -> (timm name, create_model kwargs)."""
    if name in PRESETS:
        arch, kwargs = PRESETS[name]
        return arch, dict(kwargs)
    base = name.split(".")[0]
    if not timm.is_model(base):
        raise one_of("backbone", name, list(PRESETS) + ["<any timm model name>"])
    return name, {}


def build_backbone(
    name: str,
    num_classes: int,
    weights: str | None = None,
    drop_path_rate: float = 0.1,
    pre_logits: bool = False,
    **kwargs: Any,
) -> Backbone:
    """Build a frozen timm backbone with a fresh trainable head for ``num_classes``.

    ``weights`` is a local file (.npz, .pth, .safetensors), ``"timm"`` for timm's own
    pretrained loading (needs the network), or None for random initialisation.
    ``pre_logits``: the paper's representation layer (:class:`PreLogits`, ViT only), frozen,
    loaded from the weights file with the rest.
    """
    arch, preset_kwargs = resolve_name(name)
    model_kwargs = {**preset_kwargs, **kwargs}
    model = timm.create_model(arch.split(".")[0] if weights != "timm" else arch,
                              pretrained=weights == "timm", num_classes=num_classes,
                              drop_path_rate=drop_path_rate, **model_kwargs)
    if pre_logits:
        add_pre_logits(model)
    if weights not in (None, "timm"):
        load_weights(model, Path(weights))
    # A fresh fp32 nn.Linear head with PyTorch's default init, as the reference code does.
    model.reset_classifier(num_classes)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    arch_kind = "swin" if "swin" in arch else "vit"
    backbone = Backbone(model=model, name=name, arch=arch_kind, num_classes=num_classes,
                        weights=weights, kwargs=dict(kwargs))
    backbone.sites = find_sites(model)
    if not backbone.sites:
        raise UserError(f"backbone {name!r} has no attention modules with a fused 'qkv' Linear")
    return backbone


def fetch_timm_weights(name: str, kwargs: dict[str, Any]) -> None:
    """Get timm's pretrained weights of ``name`` into the local cache (a no-op when they are
    there), so that no job starts without them; a one-line UserError when they cannot be got."""
    arch, preset_kwargs = resolve_name(name)
    model_kwargs = {**preset_kwargs, **kwargs}
    with torch.device("meta"):
        cfg = timm.create_model(arch, pretrained=False, **model_kwargs).pretrained_cfg
    source = cfg.get("hf_hub_id") or cfg.get("url") or "nowhere: timm lists none"
    try:
        timm.create_model(arch, pretrained=True, **model_kwargs)
    except Exception as err:  # offline, no such tag, a refused download: all said in one line
        raise UserError(f"cannot get timm's pretrained weights of {arch!r} (from {source}):"
                        f" {type(err).__name__}: {message(err)[:300]}; connect to the network"
                        " once (they are then cached), or set backbone.weights to a local"
                        " checkpoint file") from None


def meta_backbone(name: str, pre_logits: bool = False, **kwargs: Any) -> Backbone:
    """The backbone's structure without weights or memory (meta device): for config checks."""
    arch, preset_kwargs = resolve_name(name)
    with torch.device("meta"):
        model = timm.create_model(arch.split(".")[0], pretrained=False,
                                  **{**preset_kwargs, **kwargs})
        if pre_logits:
            add_pre_logits(model)
    arch_kind = "swin" if "swin" in arch else "vit"
    return Backbone(model=model, name=name, arch=arch_kind, num_classes=0, weights=None,
                    kwargs=dict(kwargs), sites=find_sites(model))


def find_sites(model: nn.Module) -> list[AttentionSite]:
    """Every block's attention, in forward order (ViT: blocks; Swin: layers[s].blocks)."""
    sites: list[AttentionSite] = []
    if hasattr(model, "layers"):  # Swin: stages of blocks
        for stage, layer in enumerate(model.layers):
            for block in layer.blocks:
                sites.append(AttentionSite(len(sites), stage, block, block.attn,
                                           block.attn.num_heads))
    else:
        for block in model.blocks:
            sites.append(AttentionSite(len(sites), 0, block, block.attn, block.attn.num_heads))
    return sites


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .pth/.safetensors checkpoint as a flat state dict, or raise a UserError."""
    if not path.is_file():
        raise UserError(f"weights file {path} {what_is(path)}; expected one of {WEIGHT_SUFFIXES}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any parse failure means: not a checkpoint
        raise UserError(f"weights file {path} is not a readable checkpoint ({type(err).__name__})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file {path} is not a checkpoint: expected a dict of tensors")
    return state


def check_weights_file(path: Path, name: str, kwargs: dict[str, Any],
                       pre_logits: bool = False) -> None:
    """Fail early (before any job) if ``path`` is missing, unreadable or for another model.

    Every format is checked tensor by tensor against a weightless (meta) build of the
    backbone: a tensor of another shape, a missing one or an extra one (e.g. more blocks
    than the model has, or a representation layer the model lacks) is a one-line UserError
    naming the tensor and both shapes.
    """
    if not path.is_file():  # before any open: a FIFO would block, /dev/zero never end
        raise UserError(f"weights file {path} {what_is(path)}; expected a checkpoint file"
                        f" ({', '.join(WEIGHT_SUFFIXES)})")
    model = meta_backbone(name, pre_logits=pre_logits, **kwargs).model
    if path.suffix == ".npz":
        check_npz(path, model)
        return
    _check_keys(path, model, to_timm_layout(read_state_dict(path), model, path))


def to_timm_layout(state: dict[str, torch.Tensor], model: nn.Module,
                   path: Path | None = None) -> dict[str, torch.Tensor]:
    """A Swin checkpoint in Microsoft's layout (downsample at the end of a stage, ``head.``)
    converted by timm's own ``checkpoint_filter_fn``; other checkpoints as they are."""
    if type(model).__name__ != "SwinTransformer":
        return state
    from timm.models.swin_transformer import checkpoint_filter_fn

    # Tables of blocks the model lacks pass through untouched (the filter would look the
    # block up and fail): the key check then names them as unexpected.
    modules = dict(model.named_modules())
    foreign = {k: v for k, v in state.items() if k.endswith("relative_position_bias_table")
               and k.rsplit(".", 1)[0] not in modules}
    kept = {k: v for k, v in state.items() if k not in foreign}
    try:
        return {**checkpoint_filter_fn(kept, model), **foreign}
    except Exception as err:  # a tensor it cannot resize: name it and the shapes
        raise UserError(_swin_conversion_error(kept, model, path, err)) from None


def _swin_conversion_error(state: dict[str, torch.Tensor], model: nn.Module,
                           path: Path | None, err: Exception) -> str:
    """One line naming the tensor ``checkpoint_filter_fn`` fails on and both shapes: each
    tensor is converted alone until one fails (the conversion is tensor by tensor)."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    where = f"weights file {path}" if path is not None else "Swin checkpoint"
    own = model.state_dict()
    for key, value in state.items():
        try:
            checkpoint_filter_fn({key: value}, model)
        except Exception as one:  # only on the error path
            # The model's tensor of that name (Microsoft's downsample is one stage earlier).
            target = next((k for k in (key, re.sub(r"layers\.(\d+)\.downsample", lambda m:
                           f"layers.{int(m.group(1)) + 1}.downsample", key)) if k in own), None)
            expected = (f"the model's {target!r} has shape {tuple(own[target].shape)}"
                        if target is not None else "the model has no tensor of that name")
            reason = str(one).splitlines()[0] if str(one) else type(one).__name__
            return (f"{where} is for another architecture: Swin tensor {key!r} of shape"
                    f" {tuple(value.shape)} does not convert to this model ({expected};"
                    f" {reason})")
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{where} does not convert to this Swin architecture ({type(err).__name__}: {reason})"


def check_npz(path: Path, model: nn.Module) -> None:
    """Check an original (Google/big_vision naming) ViT .npz against ``model`` without
    loading it: timm's own loader runs with every copy into the model intercepted, so the
    check sees exactly the tensors and shapes a real load would."""
    if not path.is_file():
        raise UserError(f"weights file {path} {what_is(path)}; expected a .npz checkpoint")
    if not hasattr(model, "load_pretrained"):
        raise UserError(f"weights file {path}: .npz checkpoints are only supported for ViT,"
                        f" not {type(model).__name__}; use a .pth or .safetensors file")
    try:
        import numpy as np

        with np.load(path) as archive:
            files = list(archive.files)
    except Exception as err:
        raise UserError(f"weights file {path} is not a readable .npz ({type(err).__name__})") from None
    copied, read = _npz_copies(path, model)
    pre_logits = _npz_pre_logits(path, model, files)
    for target, (source_shape, own_shape) in copied.items():
        if source_shape != own_shape:
            raise UserError(f"weights file {path} is for another architecture: the tensor for"
                            f" {target!r} has shape {source_shape}, expected {own_shape}")
    blocks = {int(m.group(1)) for f in files if (m := re.search(r"encoderblock_(\d+)/", f))}
    depth = len(getattr(model, "blocks", []))
    if blocks and max(blocks) + 1 > depth:
        extra = next(f for f in sorted(files) if f"encoderblock_{depth}/" in f)
        raise UserError(f"weights file {path} is for another architecture: it has"
                        f" {max(blocks) + 1} blocks, the model {depth} (extra tensor {extra!r})")
    head = _head_prefix(model)
    loaded = set(copied) | ({"pre_logits.fc.weight", "pre_logits.fc.bias"}
                            if has_pre_logits(model) else set())
    missing = [n for n, _ in model.named_parameters() if n not in loaded and not n.startswith(head)]
    if missing:
        shape = tuple(dict(model.named_parameters())[missing[0]].shape)
        raise UserError(f"weights file {path} is for another architecture: nothing in it"
                        f" loads {missing[0]!r} (shape {shape})")
    unused = sorted(set(files) - read - set(pre_logits) - {k for k in files if _NPZ_HEAD.search(k)})
    if unused:
        with np.load(path) as archive:
            shape = tuple(archive[unused[0]].shape)
        hint = (": the paper's representation layer; set backbone.pre_logits = true"
                if "pre_logits/" in unused[0] else "")
        raise UserError(f"weights file {path} has a tensor this model would not use:"
                        f" {unused[0]!r} (shape {shape}){hint}")


# The classifier head of an .npz: every task replaces it, so it may go unused.
_NPZ_HEAD = re.compile(r"(^|/)head/(kernel|bias)$")


def npz_prefix(files: list[str]) -> str:
    """The prefix of an original ViT .npz's names, found as timm's loader finds it."""
    for prefix in ("opt/target/", "params/", "params/img/"):
        if f"{prefix}embedding/kernel" in files:
            return prefix
    return ""


def _npz_pre_logits(path: Path, model: nn.Module, files: list[str]
                    ) -> dict[str, tuple[str, tuple[int, ...]]]:
    """.npz name -> (the model's pre_logits tensor, its shape in the model's layout), checked
    against the file: a missing tensor or another shape is one line naming both."""
    if not has_pre_logits(model):
        return {}
    import numpy as np

    prefix = npz_prefix(files)
    own = {"weight": tuple(model.pre_logits.fc.weight.shape),
           "bias": tuple(model.pre_logits.fc.bias.shape)}
    wanted = {f"{prefix}pre_logits/kernel": ("pre_logits.fc.weight", own["weight"]),
              f"{prefix}pre_logits/bias": ("pre_logits.fc.bias", own["bias"])}
    with np.load(path) as archive:
        for key, (target, shape) in wanted.items():
            if key not in files:
                raise UserError(f"weights file {path} has no tensor {key!r}, which the model's"
                                f" representation layer {target!r} (shape {shape}) is loaded"
                                f" from; set backbone.pre_logits = false for a ViT without it")
            found = tuple(archive[key].shape)[::-1]  # Flax kernel (in, out) -> (out, in)
            if found != shape:
                raise UserError(f"weights file {path} is for another architecture: the tensor"
                                f" for {target!r} has shape {found}, expected {shape}")
    return wanted


def load_npz_pre_logits(model: nn.Module, path: Path) -> None:
    """Copy ``pre_logits/kernel`` (transposed: Flax's (in, out)) and ``pre_logits/bias``."""
    import numpy as np

    with np.load(path) as archive:
        prefix = npz_prefix(list(archive.files))
        kernel = torch.from_numpy(archive[f"{prefix}pre_logits/kernel"].T.copy())
        bias = torch.from_numpy(archive[f"{prefix}pre_logits/bias"].copy())
    with torch.no_grad():
        model.pre_logits.fc.weight.copy_(kernel)
        model.pre_logits.fc.bias.copy_(bias)


def _npz_copies(path: Path, model: nn.Module
                ) -> tuple[dict[str, tuple[tuple[int, ...], tuple[int, ...]]], set[str]]:
    """model tensor name -> (shape in the file after timm's conversion, model's shape), and
    the names timm's loader read from the .npz (numpy's NpzFile lookups, recorded)."""
    from numpy.lib.npyio import NpzFile
    from torch.overrides import TorchFunctionMode

    names = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
    copied: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    class Intercept(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if getattr(func, "__name__", "") == "copy_" and args and id(args[0]) in names:
                copied[names[id(args[0])]] = (tuple(args[1].shape), tuple(args[0].shape))
                return args[0]  # nothing is written: this is only a check
            return func(*args, **(kwargs or {}))

    read: set[str] = set()
    lookup = NpzFile.__getitem__

    def recording(self: NpzFile, key: str) -> Any:
        read.add(key)
        return lookup(self, key)

    NpzFile.__getitem__ = recording  # type: ignore[method-assign]
    try:
        with Intercept():
            model.load_pretrained(str(path))
    except KeyError as err:
        raise UserError(_npz_missing(path, model, err)) from None
    except Exception as err:
        raise UserError(f"weights file {path} does not fit this architecture"
                        f" ({type(err).__name__}: {err})") from None
    finally:
        NpzFile.__getitem__ = lookup  # type: ignore[method-assign]
    return copied, read


def _npz_missing(path: Path, model: nn.Module, err: KeyError) -> str:
    """One line for a tensor timm's loader looked for and the .npz lacks: the file, the
    tensor, and the model's tensor it would have loaded (name and shape)."""
    text = str(err.args[0]) if err.args else str(err)
    # numpy's NpzFile says "<key> is not a file in the archive"; keep the key only.
    key = re.sub(r" is not a file in the archive$", "", text)
    target = _npz_target(key)
    params = dict(model.named_parameters())
    if target in params:
        return (f"weights file {path} is for another architecture: it has no tensor {key!r},"
                f" which the model's {target!r} (shape {tuple(params[target].shape)}) is"
                f" loaded from")
    return f"weights file {path} is for another architecture: it has no tensor {key!r}"


# Google's ViT .npz names (after any 'opt/target/' or 'params/' prefix) -> timm's, as
# timm's vision_transformer._load_weights reads them (big_vision's LayerNorm_1 is norm2).
_NPZ_FIXED = {"embedding/kernel": "patch_embed.proj.weight",
              "embedding/bias": "patch_embed.proj.bias", "cls": "cls_token",
              "pos_embedding": "pos_embed",
              "Transformer/posembed_input/pos_embedding": "pos_embed",
              "Transformer/encoder_norm/scale": "norm.weight",
              "Transformer/encoder_norm/bias": "norm.bias",
              "head/kernel": "head.weight", "head/bias": "head.bias"}
_NPZ_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def _npz_target(key: str) -> str | None:
    """The timm ViT parameter a Google .npz tensor is loaded into (q, k and v: qkv)."""
    key = re.sub(r"^(opt/target/|params/img/|params/)", "", key)
    m = re.fullmatch(r"Transformer/encoderblock_?(\d*)/(.+)/(kernel|scale|bias)", key)
    if m is None:
        return _NPZ_FIXED.get(key)
    block, inner, leaf = m.group(1) or "0", m.group(2), _NPZ_LEAF[m.group(3)]
    if inner == "LayerNorm_0":
        module = "norm1"
    elif re.fullmatch(r"LayerNorm_\d+", inner):
        module = "norm2"
    elif a := re.fullmatch(r"MultiHeadDotProductAttention_\d+/(query|key|value|out)", inner):
        module = "attn.proj" if a.group(1) == "out" else "attn.qkv"
    elif d := re.fullmatch(r"MlpBlock_\d+/Dense_([01])", inner):
        module = f"mlp.fc{int(d.group(1)) + 1}"
    else:
        return None
    return f"blocks.{block}.{module}.{leaf}"


def _check_keys(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint without its head, after checking it fits ``model`` key by key."""
    head_prefix = _head_prefix(model)
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head_prefix)}
    for key, value in own.items():
        if key not in state:
            raise UserError(f"weights file {path} is for another architecture: missing key {key!r}"
                            f" (the model's has shape {tuple(value.shape)})")
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(
                f"weights file {path} is for another architecture: key {key!r} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(value.shape)}"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise UserError(f"weights file {path} is for another architecture: unexpected key"
                        f" {extra[0]!r} (shape {tuple(state[extra[0]].shape)}, not in the model)")
    return state


def load_weights(model: nn.Module, path: Path) -> None:
    """Load backbone weights from a local file; the classifier head is never loaded."""
    if path.suffix == ".npz":
        check_npz(path, model)
        try:
            model.load_pretrained(str(path))
        except Exception as err:
            raise UserError(f"weights file {path} does not fit this architecture ({err})") from None
        if has_pre_logits(model):
            load_npz_pre_logits(model, path)
        return
    state = _check_keys(path, model, to_timm_layout(read_state_dict(path), model, path))
    model.load_state_dict(state, strict=False)


def _head_prefix(model: nn.Module) -> str:
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name + "."
    return "head."
