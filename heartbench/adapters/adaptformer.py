"""AdaptFormer (Chen et al. 2022): a scaled bottleneck parallel to every block's MLP.

Follows the Bi-LoRA code the paper builds on (github.com/JieShibo/PETL-ViT,
``binary_adapter/adaptformer.py``, fp32 branch), which matches the official AdaptFormer
(``ffn_option="parallel"``, ``ffn_adapter_layernorm_option="none"``)::

    x = x + drop_path(attn(norm1(x)))
    x = x + drop_path(mlp(norm2(x))) + s * up(drop(relu(down(x))))

* The adapter's input is the block's residual stream *before* ``norm2`` (``input="block"``,
  the default: both reference codes feed ``x``, not ``norm2(x)``), and its output is added
  outside the drop-path. ``input="norm2"`` feeds the MLP's own input (after ``norm2``) and
  adds the result to the MLP output (inside the drop-path), the form some
  re-implementations use.
* ``down``: dim -> ``hidden`` with PyTorch's default Linear init, ``up``: ``hidden`` -> dim
  zero-initialised (zero update at initialisation), ReLU, dropout 0.1 on the bottleneck,
  no biases (Bi-LoRA's code; the official AdaptFormer has biases: ``bias=True``).
* ``scale`` s = 0.1 (the official ``ffn_adapter_scalar``; Bi-LoRA sweeps it per task).

Mechanics: the adapter is registered as ``block.adaptformer``. For ``input="block"`` a
forward pre-hook on ``norm2`` keeps its input and a forward hook on ``drop_path2`` adds
``s * adapter(input)`` to the drop-path output (same as adding it to the block output);
for ``input="norm2"`` a forward hook on ``mlp`` adds ``s * adapter(mlp input)``. Works on
ViT and Swin blocks (the adapter width is each block's ``mlp.fc1.in_features``).

Size on ViT-B/16, hidden 8: 12 x (768 x 8 + 8 x 768) = 147,456 fp32 values = 589,824 B =
0.5625 MiB; Table 1: 0.56 MB. With biases: 156,768 = 0.598 MiB.

Not mergeable (a non-linear branch; it is not a Linear that could be folded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters.adapter import (
    ScaledBottleneck,
    check_activation,
    device_of,
    mlp_blocks,
)
from heartbench.adapters.base import Method, MethodConfig, register, require
from heartbench.backbones import Backbone
from heartbench.errors import UserError

INPUTS = ("block", "norm2")


@dataclass
class AdaptFormerConfig(MethodConfig):
    hidden: int = 8
    scale: float = 0.1
    dropout: float = 0.1
    bias: bool = False
    activation: str = "relu"
    input: str = "block"

    def validate(self) -> None:
        require(self.hidden > 0, f"hidden must be a positive integer, got {self.hidden}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.scale == self.scale, "scale must be a number, got NaN")
        require(self.input in INPUTS,
                f"input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        check_activation(self.activation)


class ParallelAdapter(ScaledBottleneck):
    """A scaled bottleneck that can hold the input it is to be applied to."""

    def __init__(self, dim: int, hidden: int, bias: bool, activation: str, dropout: float,
                 scale: float) -> None:
        super().__init__(dim, hidden, bias, activation, dropout, scale)
        self.pending: torch.Tensor | None = None


def _keep_input_hook(adapter: ParallelAdapter, module: nn.Module, args: tuple) -> None:
    adapter.pending = args[0]


def _add_pending_hook(adapter: ParallelAdapter, module: nn.Module, args: tuple,
                      out: torch.Tensor) -> torch.Tensor:
    x, adapter.pending = adapter.pending, None  # drop the reference: no stale activations
    if x is None:
        raise RuntimeError("adaptformer: drop_path2 ran without norm2 before it")
    return out + adapter(x)


def _add_from_input_hook(adapter: ParallelAdapter, module: nn.Module, args: tuple,
                         out: torch.Tensor) -> torch.Tensor:
    return out + adapter(args[0])


@register("adaptformer")
class AdaptFormer(Method):
    """s * up(relu(down(x))) added in parallel to every block's MLP branch."""

    config_cls = AdaptFormerConfig

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def check_backbone(self, backbone: Backbone) -> None:
        for block in mlp_blocks(backbone, self.name):
            if self.config.input == "block" and not (hasattr(block, "norm2")
                                                     and hasattr(block, "drop_path2")):
                raise UserError(f"method {self.name!r} with input='block' needs blocks with"
                                f" norm2 and drop_path2; {type(block).__name__} has not")

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        c = self.config
        for site, block in zip(backbone.sites, mlp_blocks(backbone, self.name)):
            adapter = ParallelAdapter(block.mlp.fc1.in_features, c.hidden, c.bias,
                                      c.activation, c.dropout, c.scale)
            adapter.to(device_of(block))
            block.add_module("adaptformer", adapter)
            if c.input == "block":
                self.handles.append(block.norm2.register_forward_pre_hook(
                    functools.partial(_keep_input_hook, adapter)))
                self.handles.append(block.drop_path2.register_forward_hook(
                    functools.partial(_add_pending_hook, adapter)))
            else:
                self.handles.append(block.mlp.register_forward_hook(
                    functools.partial(_add_from_input_hook, adapter)))
            self.modules[f"layer{site.layer}"] = adapter
        self.match_mode()
