"""Each method's *limit*: the same frozen backbone where every site the method adapts
carries only a trainable scalar gate, so the backward pass reaches exactly the modules the
method needs and the adapter's own arithmetic costs (almost) nothing.

Gates are *additive* scalars (``out + g``, or ``out[..., slice] += g``): one add forward,
one sum backward, nothing saved for backward, i.e. the cheapest thing that makes autograd
reach a site. A gate's value and gradient do not matter, only that autograd goes through
it: a gate just before a LayerNorm (attention, MLP, proj or fc2 outputs, a block's input)
has a true gradient of exactly zero, since LayerNorm removes a shift common to a token's
features, and its computed gradient is rounding noise.

Limits per method (:func:`limit_spec`):

- lora, bilora, heart_lora, fourierft, mora (every ``QKVMethod``): the target slices of
  every site's fused qkv output (q and v; the whole qkv for ``targets="qkv"``);
- adaptformer, adapter: every block's MLP output; compacter (Houlsby): attention and MLP
  outputs; fact_tt: the outputs of qkv, proj, fc1 and fc2; ssf: every op SSF follows;
- vpt_shallow: the input of the first block; vpt_deep: the input of every block;
- full, bitfit (they train backbone tensors down to the patch embedding): the patch
  embedding's output. Weight gradients and AdamW moments of the trained tensors are the
  method's own cost: full cannot meet a gate-defined limit (by design);
- linear (head only): the frozen backbone and the head, no gate (= the method itself);
- any other method: the patch embedding (generic; the report says so).

To add a limit: one placement function in ``PLACEMENTS`` and, if a method should use it,
one rule in :func:`limit_spec`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The frozen backbone with its gradient reaching the patch embedding: always measured.
REFERENCE_LIMIT = "patch"


@dataclass
class LimitSpec:
    """Where a method's limit puts its gates."""

    key: str
    description: str


def limit_spec(method: Any) -> LimitSpec:
    """The limit of an attached method (see the module docstring)."""
    from heartbench.adapters.base import QKVMethod, parse_targets
    from heartbench.adapters.full import BackboneTensors

    name = method.name
    if isinstance(method, QKVMethod):
        targets = parse_targets(method.config.targets)
        return LimitSpec(f"qkv[{','.join(targets)}]",
                         f"gates on the {'+'.join(targets)} slice(s) of every qkv output")
    if name == "linear":
        return LimitSpec("head", "frozen backbone, head only (no gate: equals linear probing)")
    if isinstance(method, BackboneTensors):
        return LimitSpec("patch", "gate on the patch embedding output (gradient to the first"
                                  " trained tensor)")
    if name in ("adaptformer", "adapter"):
        return LimitSpec("mlp", "gate on every block's MLP output")
    if name == "compacter":
        if getattr(method.config, "placement", "houlsby") == "houlsby":
            return LimitSpec("attn+mlp", "gates on every block's attention and MLP outputs")
        return LimitSpec("mlp", "gate on every block's MLP output")
    if name == "fact_tt":
        return LimitSpec("linears", "gates on the qkv, proj, fc1 and fc2 outputs of every block")
    if name == "ssf":
        return LimitSpec("ssf_ops", "gates on every op SSF follows (Linear, LayerNorm, patch"
                                    " embedding)")
    if name == "vpt_shallow":
        return LimitSpec("block0_in", "gate on the first block's input")
    if name == "vpt_deep":
        return LimitSpec("blocks_in", "gate on every block's input")
    return LimitSpec("patch", "generic limit (no rule for this method): gate on the patch"
                              " embedding output")


class Gates:
    """Puts scalar gates on modules of one backbone and keeps them (in placement order)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.params: list[Any] = []
        # Per gate: (module, output rows or None for all, "output" or "input").
        self.sites: list[tuple[Any, tuple[int, int] | None, str]] = []

    def _new(self) -> Any:
        import torch
        from torch import nn

        gate = nn.Parameter(torch.zeros((), device=self.device))
        self.params.append(gate)
        return gate

    def on_output(self, module: Any, rows: tuple[int, int] | None = None) -> None:
        """``module``'s output + gate (on output features ``rows`` only, when given)."""
        self.sites.append((module, rows, "output"))
        module.register_forward_hook(functools.partial(_out_hook, self._new(), rows))

    def on_input(self, module: Any) -> None:
        """``module``'s first input + gate."""
        self.sites.append((module, None, "input"))
        module.register_forward_pre_hook(functools.partial(_pre_hook, self._new()))


def _out_hook(gate: Any, rows: tuple[int, int] | None, module: Any, args: Any, out: Any) -> Any:
    if rows is None:
        return out + gate
    return _slice_gate().apply(out, gate, rows)


def _pre_hook(gate: Any, module: Any, args: tuple) -> tuple:
    return (args[0] + gate, *args[1:])


def _qkv(backbone: Any, gates: Gates, targets: list[str]) -> None:
    from heartbench.adapters.base import qkv_slice

    for site in backbone.sites:
        for target in targets:
            rows = qkv_slice(target, site.dim)
            full = rows == (0, site.base_qkv.out_features)
            gates.on_output(site.attn.qkv, None if full else rows)


def _head(backbone: Any, gates: Gates) -> None:
    """No gate: the frozen backbone and its head are linear probing itself."""


def _patch(backbone: Any, gates: Gates) -> None:
    gates.on_output(backbone.model.patch_embed)


def _mlp(backbone: Any, gates: Gates) -> None:
    for site in backbone.sites:
        gates.on_output(site.block.mlp)


def _attn_mlp(backbone: Any, gates: Gates) -> None:
    for site in backbone.sites:
        gates.on_output(site.block.attn)
        gates.on_output(site.block.mlp)


def _linears(backbone: Any, gates: Gates) -> None:
    for site in backbone.sites:
        for module in (site.attn.qkv, site.attn.proj, site.block.mlp.fc1, site.block.mlp.fc2):
            gates.on_output(module)


def _ssf_ops(backbone: Any, gates: Gates) -> None:
    from heartbench.adapters.ssf import ssf_targets

    for _, op in ssf_targets(backbone):
        gates.on_output(op)


def _block0_in(backbone: Any, gates: Gates) -> None:
    gates.on_input(backbone.sites[0].block)


def _blocks_in(backbone: Any, gates: Gates) -> None:
    for site in backbone.sites:
        gates.on_input(site.block)


# Limit key -> where its gates go. ``qkv[t1,t2]`` keys are parsed (any target list).
PLACEMENTS: dict[str, Callable[[Any, Gates], None]] = {
    "head": _head, "patch": _patch, "mlp": _mlp, "attn+mlp": _attn_mlp, "linears": _linears,
    "ssf_ops": _ssf_ops, "block0_in": _block0_in, "blocks_in": _blocks_in,
}


def place_gates(backbone: Any, key: str) -> Gates:
    """Put the gates of limit ``key`` on ``backbone``; return them with their sites."""
    gates = Gates(next(backbone.model.parameters()).device)
    if key.startswith("qkv["):
        _qkv(backbone, gates, key[4:-1].split(","))
    elif key in PLACEMENTS:
        PLACEMENTS[key](backbone, gates)
    else:
        raise ValueError(f"unknown limit {key!r}")
    return gates


def install_gates(backbone: Any, key: str) -> list[Any]:
    """Put the gates of limit ``key`` on ``backbone``; return the gate parameters."""
    return place_gates(backbone, key).params


_SLICE_GATE: Any = None


def _slice_gate() -> Any:
    """``out[..., rows] += gate`` in place with a pass-through backward (built lazily: torch).

    Autograd's own in-place slice add (CopySlices) would clone the whole qkv gradient in
    backward, a cost that is the gate's, not the method's; this gate costs one add forward
    and one sum backward.
    """
    global _SLICE_GATE
    if _SLICE_GATE is None:
        import torch

        class SliceGate(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, out: Any, gate: Any, rows: tuple[int, int]) -> Any:
                out[..., rows[0]:rows[1]] += gate
                ctx.mark_dirty(out)
                ctx.rows = rows
                return out

            @staticmethod
            def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
                start, stop = ctx.rows
                return grad, grad[..., start:stop].sum(), None

        _SLICE_GATE = SliceGate
    return _SLICE_GATE
