"""A contract check for methods, built in or your own: ``check_method("my_method")``.

It verifies, on a tiny ViT (``vit_test``: 32 px, 2 layers, 12 heads; a few seconds on a
CPU), what the interface in :mod:`heartbench.adapters.base` promises and what the trainer,
the records and Table 1's Size column rely on:

1. *only the method's parameters train*: after ``attach`` the parameters of the model that
   require a gradient are exactly ``method.trainable_parameters()`` plus the head, and each
   of them gets a gradient from the loss (none is dead weight the optimiser carries);
2. *hooks keep the model's mode*: ``attach`` leaves every module in the model's train/eval
   mode, and ``on_train_start``, ``on_epoch_start``, ``on_epoch_end`` change no module's mode;
3. *stored size*: ``method.stored_bytes()`` equals the bytes of the method's tensors in the
   file ``save_adapter`` writes (read back from the file), and ``save_adapter``'s return;
4. *save/load round-trips*: after a few training steps (so the update is not zero), a fresh
   backbone with ``load_adapter`` gives the same outputs as the trained model;
5. *merge*: for a ``mergeable`` method, ``merge()`` keeps the outputs; for the others it
   raises :class:`~heartbench.adapters.NotMergeable`.

A failed promise raises :class:`MethodContractError` naming the method and the promise.
Use it in your tests (``new-method`` writes one)::

    from heartbench.testing import check_method

    def test_contract():
        check_method("my_method", {"rank": 2})
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Outputs compared after save/load and merge: float32 on a tiny model.
ATOL, RTOL = 1e-5, 1e-4


class MethodContractError(AssertionError):
    """A method does not keep a promise of the interface."""


def check_method(method: str | type, config: dict[str, Any] | None = None,
                 backbone: str = "vit_test", num_classes: int = 5, steps: int = 3,
                 seed: int = 0) -> dict[str, Any]:
    """Check the interface's promises for ``method`` (a registered name or a registered
    ``Method`` subclass) with ``config``; returns what it measured (trainable parameters,
    stored bytes, largest output differences). Raises MethodContractError."""
    from heartbench.adapters import get_method_class

    name = method if isinstance(method, str) else getattr(method, "name", "")
    if not name:
        raise MethodContractError(f"{method!r} is not registered (decorate it with @register)")
    cls = get_method_class(name)
    if not isinstance(method, str) and cls is not method:
        raise MethodContractError(f"{method!r} is not the class registered as {name!r}")
    config = dict(config or {})
    torch.manual_seed(seed)
    x = torch.randn(4, 3, 32, 32)
    labels = torch.arange(4) % num_classes
    with tempfile.TemporaryDirectory() as tmp:
        return _check(name, config, backbone, num_classes, steps, seed, x, labels, Path(tmp))


def _fail(name: str, promise: str, detail: str) -> MethodContractError:
    return MethodContractError(f"method {name!r}: {promise}: {detail}")


def _fresh(backbone: str, num_classes: int, seed: int) -> Any:
    from heartbench.backbones import build_backbone

    torch.manual_seed(seed)
    built = build_backbone(backbone, num_classes, drop_path_rate=0.0)
    built.model.eval()
    return built


def _check(name: str, config: dict[str, Any], backbone_name: str, num_classes: int,
           steps: int, seed: int, x: torch.Tensor, labels: torch.Tensor, tmp: Path
           ) -> dict[str, Any]:
    from heartbench.adapters import create_method

    backbone = _fresh(backbone_name, num_classes, seed)
    method = create_method(name, config)
    method.check_backbone(backbone)
    backbone.model.train()
    method.attach(backbone)
    _check_modes(name, "attach", backbone.model, True)
    _check_trainable(name, backbone, method, x, labels)
    _train(name, backbone, method, x, labels, steps)
    backbone.model.eval()
    with torch.no_grad():
        trained = backbone.model(x)
        again = backbone.model(x)
    _close(name, "eval outputs are deterministic (no dropout or noise in eval mode)", again,
           trained)
    stored = _check_size(name, method, tmp / "adapter.safetensors")
    loaded_out, loaded = _round_trip(name, tmp / "adapter.safetensors", backbone_name,
                                     num_classes, seed, x, trained)
    merge_diff = _check_merge(name, loaded, x, trained)
    return {"method": name, "trainable_params": method.num_trainable(), "stored_bytes": stored,
            "load_max_diff": float((loaded_out - trained).abs().max()),
            "merge_max_diff": merge_diff}


def _modes(model: nn.Module) -> dict[str, bool]:
    return {n: m.training for n, m in model.named_modules()}


def _check_modes(name: str, after: str, model: nn.Module, training: bool) -> None:
    wrong = [n or "(model)" for n, t in _modes(model).items() if t != training]
    if wrong:
        raise _fail(name, "hooks keep the model's train/eval mode",
                    f"after {after} the model is in {'train' if training else 'eval'} mode but"
                    f" {', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} is not")


def _check_trainable(name: str, backbone: Any, method: Any, x: torch.Tensor,
                     labels: torch.Tensor) -> None:
    declared = method.trainable_parameters() + backbone.head_parameters()
    ids = {id(p) for p in declared}
    named = dict(backbone.model.named_parameters())
    in_model = {id(p) for p in named.values()}
    outside = [p for p in method.trainable_parameters() if id(p) not in in_model]
    if outside:
        raise _fail(name, "only the method's parameters train",
                    f"{len(outside)} of trainable_parameters() are not in the model"
                    " (attach must insert the modules into backbone.model)")
    undeclared = [n for n, p in named.items() if p.requires_grad and id(p) not in ids]
    if undeclared:
        raise _fail(name, "only the method's parameters train",
                    f"{', '.join(undeclared[:3])} require grad but are not in"
                    " trainable_parameters() (freeze them, or return them)")
    loss = nn.functional.cross_entropy(backbone.model(x), labels)
    grads = torch.autograd.grad(loss, declared, allow_unused=True)
    dead = [n for n, p in named.items() if id(p) in ids and
            grads[[id(q) for q in declared].index(id(p))] is None]
    if dead:
        raise _fail(name, "only the method's parameters train",
                    f"{', '.join(dead[:3])} get no gradient from the loss")


def _train(name: str, backbone: Any, method: Any, x: torch.Tensor, labels: torch.Tensor,
           steps: int) -> None:
    """A few SGD steps through the trainer's hooks (epoch 0 a warm-up), so that the update
    is not its zero initialisation; no hook may change a module's train/eval mode."""
    params = method.trainable_parameters() + backbone.head_parameters()
    optimizer = torch.optim.SGD(params, lr=0.5)
    model = backbone.model

    def hook(what: str, call: Any, *args: Any) -> None:
        before = _modes(model)
        call(*args)
        changed = [n or "(model)" for n, t in _modes(model).items() if before.get(n) != t]
        if changed:
            raise _fail(name, "hooks keep the model's train/eval mode",
                        f"{what} changed the mode of {', '.join(changed[:3])}"
                        f"{' ...' if len(changed) > 3 else ''}")

    model.eval()
    hook("on_train_start", method.on_train_start, 2, 1, steps)
    for epoch in range(2):
        model.train(epoch % 2 == 1)  # the trainer's order: the hook, then model.train()
        hook(f"on_epoch_start({epoch})", method.on_epoch_start, epoch)
        model.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), labels).backward()
            optimizer.step()
        hook(f"on_epoch_end({epoch})", method.on_epoch_end, epoch)


def _check_size(name: str, method: Any, path: Path) -> int:
    from safetensors import safe_open

    from heartbench.adapters import save_adapter

    claimed = method.stored_bytes()
    returned = save_adapter(method, path)
    with safe_open(str(path), framework="pt") as f:
        written = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                      for k in f.keys() if k.startswith("adapter."))
    if not claimed == returned == written:
        raise _fail(name, "stored size equals what save_adapter writes",
                    f"stored_bytes() {claimed}, save_adapter returned {returned}, the file holds"
                    f" {written} bytes of adapter tensors")
    return written


def _round_trip(name: str, path: Path, backbone_name: str, num_classes: int, seed: int,
                x: torch.Tensor, trained: torch.Tensor) -> tuple[torch.Tensor, Any]:
    from heartbench.adapters import load_adapter

    # The same frozen backbone (same seed, as a pretrained checkpoint); the head and what
    # the method trains come from the file only.
    fresh = _fresh(backbone_name, num_classes, seed)
    loaded = load_adapter(path, fresh)
    fresh.model.eval()
    _check_modes(name, "load_adapter on an eval model", fresh.model, False)
    with torch.no_grad():
        out = fresh.model(x)
    _close(name, "save/load round-trips to the same outputs", out, trained)
    return out, loaded


def _check_merge(name: str, method: Any, x: torch.Tensor, trained: torch.Tensor
                 ) -> float | None:
    from heartbench.adapters import NotMergeable

    model = method.backbone.model
    if not method.mergeable:
        try:
            method.merge()
        except NotMergeable:
            return None
        raise _fail(name, "merge", "mergeable is False but merge() did not raise NotMergeable")
    method.merge()
    with torch.no_grad():
        out = model(x)
    _close(name, "merge gives the same outputs", out, trained)
    return float((out - trained).abs().max())


def _close(name: str, promise: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    if not torch.allclose(actual, expected, atol=ATOL, rtol=RTOL):
        diff = float((actual - expected).abs().max())
        raise _fail(name, promise, f"outputs differ by up to {diff:.3g}"
                    f" (tolerance {ATOL} + {RTOL} x |output|)")
