"""Adapter-P: Pfeiffer-style sequential bottleneck adapter after every block's MLP.

Placement (Pfeiffer et al. 2020, "AdapterFusion"; the vision form of VPT's adapter baseline,
github.com/KMnP/vpt ``src/models/vit_adapter/adapter_block.py``, ``Pfeiffer_Block``): one
adapter per block, on the output of the MLP sub-layer, sequential with its own residual,
before the block's drop-path and residual add::

    h = mlp(norm2(x));   x = x + drop_path(h + up(act(down(h))))

``down``: dim -> ``hidden``, ``up``: ``hidden`` -> dim. A forward hook on ``block.mlp``
adds the adapter output, so the timm module tree and its parameter names are untouched;
the adapter module is registered as ``block.mlp.adapter``.

Initialisation: ``down`` keeps PyTorch's Linear default (kaiming-uniform, as AdaptFormer and
LoRA), ``up`` (weight and bias) is zero, so the adapter is the identity at initialisation.
Deviation: VPT's ``Pfeiffer_Block`` zero-initialises *both* projections; with GELU(0) = 0
that leaves every weight gradient zero forever (only the up bias can learn), so we do not
copy it.

Defaults: ``hidden=8`` (the hidden dimension Table 1 uses for the adapters),
``activation="relu"`` (Pfeiffer's; VPT's block uses GELU: ``activation="gelu"``), no
dropout, ``bias=False``.

Size on ViT-B/16: 12 x (768 x 8 + 8 x 768) = 147,456 fp32 values = 589,824 B = 0.5625 MiB;
Table 1 lists Adapter-P at 0.56 MB. With biases (``bias=True``, the original form) it would
be 12 x (6,144 + 8 + 6,144 + 768) = 156,768 = 0.598 MiB ("0.60"), so the Size column counts
weights only: we default to no biases to match it (AdaptFormer's row in Table 1, 0.56 MB,
is also bias-free, as in the Bi-LoRA code the paper follows).

Few-shot (Figure 2's Adapter row comes from NOAH): NOAH's adapter
(``model/module/adapter_super.py``, ``AdapterSuper``): the same placement
(``x + mlp_out + s * adapter(mlp_out)``), with ``activation="quick_gelu"``
(x * sigmoid(1.702 x)), ``bias=True`` and ``init="xavier"`` (xavier-uniform weights on both
projections, biases normal with std 1e-6): what ``suites/fewshot.toml`` sets.
``init="zero_up"`` (the default) is the Pfeiffer form above.

Not mergeable (a non-linear module in the residual stream).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from heartbench.adapters.base import Method, MethodConfig, register, require
from heartbench.backbones import Backbone
from heartbench.errors import UserError


class QuickGELU(nn.Module):
    """NOAH's (and CLIP's) activation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity,
               "quick_gelu": QuickGELU}
# "zero_up": PyTorch's default down, zero up (identity at init); "xavier": NOAH's
# AdapterSuper.init_weights (xavier-uniform weights, biases N(0, 1e-6)).
INITS = ("zero_up", "xavier")


def check_activation(name: str) -> None:
    require(name in ACTIVATIONS,
            f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")


class Bottleneck(nn.Module):
    """up(drop(act(down(x)))) with ``up`` zero-initialised (zero output at init)."""

    def __init__(self, dim: int, hidden: int, bias: bool, activation: str,
                 dropout: float, init: str = "zero_up") -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(hidden, dim, bias=bias)
        if init == "xavier":
            for layer in (self.down, self.up):
                nn.init.xavier_uniform_(layer.weight)
                if bias:
                    nn.init.normal_(layer.bias, std=1e-6)
        else:
            if bias:
                nn.init.zeros_(self.down.bias)
                nn.init.zeros_(self.up.bias)
            nn.init.zeros_(self.up.weight)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(self.act(self.down(x))))


# Hooks are partials of module-level functions (not closures): a deep copy of an attached
# model copies the partial's module argument with the model, so the copy stays consistent.
def sequential_hook(adapter: nn.Module, module: nn.Module, args: tuple,
                    out: torch.Tensor) -> torch.Tensor:
    """Forward hook: the sub-layer output plus the adapter applied to it."""
    return out + adapter(out)


def mlp_blocks(backbone: Backbone, method: str) -> list[nn.Module]:
    """Every transformer block (ViT or Swin) with its ``mlp``; UserError if one lacks it."""
    blocks = [site.block for site in backbone.sites]
    for block in blocks:
        if not hasattr(block, "mlp") or not hasattr(block.mlp, "fc1"):
            raise UserError(f"method {method!r}: block {type(block).__name__} of backbone"
                            f" {backbone.name!r} has no timm Mlp (mlp.fc1)")
    return blocks


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@dataclass
class AdapterConfig(MethodConfig):
    hidden: int = 8
    activation: str = "relu"
    dropout: float = 0.0
    bias: bool = False
    scale: float = 1.0  # multiplies the adapter output (Pfeiffer: none, i.e. 1)
    init: str = "zero_up"  # "xavier": NOAH's (see the module docstring)
    # Added after the committed records (which had the zero-up init): out of their identity.
    added: ClassVar[dict[str, Any]] = {"init": "zero_up"}

    def validate(self) -> None:
        require(self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        require(self.hidden > 0, f"hidden must be a positive integer, got {self.hidden}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.scale == self.scale, "scale must be a number, got NaN")
        check_activation(self.activation)


class ScaledBottleneck(Bottleneck):
    """A bottleneck whose output is multiplied by a fixed ``scale``."""

    def __init__(self, dim: int, hidden: int, bias: bool, activation: str, dropout: float,
                 scale: float, init: str = "zero_up") -> None:
        super().__init__(dim, hidden, bias, activation, dropout, init)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


@register("adapter")
class AdapterP(Method):
    """Sequential bottleneck adapter on every block's MLP output (Pfeiffer placement)."""

    config_cls = AdapterConfig

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def check_backbone(self, backbone: Backbone) -> None:
        mlp_blocks(backbone, self.name)

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        c = self.config
        for site, block in zip(backbone.sites, mlp_blocks(backbone, self.name)):
            adapter = ScaledBottleneck(block.mlp.fc1.in_features, c.hidden, c.bias,
                                       c.activation, c.dropout, c.scale, c.init)
            adapter.to(device_of(block))
            block.mlp.add_module("adapter", adapter)
            self.handles.append(block.mlp.register_forward_hook(
                functools.partial(sequential_hook, adapter)))
            self.modules[f"layer{site.layer}"] = adapter
        self.match_mode()
