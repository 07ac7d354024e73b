"""SSF (Lian et al. 2022): a per-channel scale and shift after the backbone's operations.

Follows the official code (github.com/dongzelian/SSF, ``models/vision_transformer.py``,
``tuning_mode="ssf"``): ``y = gamma * op(x) + beta`` after

* the patch embedding (its convolution),
* in every block: ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
  ``mlp.fc2``,
* the final ``norm``,

which on a timm ViT is exactly "every Linear and LayerNorm of the backbone except the
head, plus the patch-embedding convolution"; we apply that rule, so on Swin it also covers
the patch-merging ``norm`` and ``reduction`` (as the official Swin code does).

Initialisation (``init``): ``"normal"`` (default) is the official ``gamma ~ N(1, 0.02)``,
``beta ~ N(0, 0.02)``; ``"identity"`` gives gamma = 1, beta = 0 (zero update at
initialisation).

Mechanics: each op gets a child :class:`ScaleShift` (``<op>.ssf``) and a forward hook, so
module types and parameter names stay the timm ones. ``merge`` folds the scale and shift
into the op (``W <- gamma * W`` row-wise, ``b <- gamma * b + beta``; for a LayerNorm the
affine weight and bias the same way; for the convolution per output channel), removes the
hooks and children, and leaves the plain backbone: mergeable.

Size on ViT-B/16: 2 x [12 x (768 + 2,304 + 768 + 768 + 3,072 + 768) + 768 + 768] =
205,824 fp32 values = 823,296 B = 0.785 MiB; Table 1 lists SSF at 0.78 MB. The 1,536
values of the patch-embedding SSF are the difference (without them: 204,288 = 0.779 MiB);
we keep the official set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters.base import Method, MethodConfig, register, require
from heartbench.backbones import Backbone

INITS = ("normal", "identity")


@dataclass
class SSFConfig(MethodConfig):
    init: str = "normal"
    init_std: float = 0.02

    def validate(self) -> None:
        require(self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        require(self.init_std >= 0, f"init_std must be >= 0, got {self.init_std}")


class ScaleShift(nn.Module):
    """gamma and beta of one op's output channels."""

    def __init__(self, channels: int, init: str, std: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        if init == "normal":
            nn.init.normal_(self.scale, mean=1.0, std=std)
            nn.init.normal_(self.shift, std=std)


def _ssf_hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    # Reads the parameters from the op itself: no closure, deep copies stay consistent.
    ssf = module.ssf
    if isinstance(module, nn.Conv2d):  # channels first
        return out * ssf.scale[:, None, None] + ssf.shift[:, None, None]
    return out * ssf.scale + ssf.shift


def ssf_targets(backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """(name, op) for every op SSF follows: Linear, LayerNorm, the patch-embedding conv."""
    head = backbone.head
    patch_proj = getattr(getattr(backbone.model, "patch_embed", None), "proj", None)
    ops = []
    for name, module in backbone.model.named_modules():
        if module is head:
            continue
        if isinstance(module, (nn.Linear, nn.LayerNorm)) or module is patch_proj:
            ops.append((name, module))
    return ops


def _channels(op: nn.Module) -> int:
    if isinstance(op, nn.Linear):
        return op.out_features
    if isinstance(op, nn.Conv2d):
        return op.out_channels
    return int(op.normalized_shape[-1])


@torch.no_grad()
def _fold(op: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """op's output y becomes scale * y + shift by changing op's own weight and bias."""
    weight = op.weight
    if weight is None:  # LayerNorm without affine: it gets one
        op.weight = nn.Parameter(torch.ones_like(scale), requires_grad=False)
        weight = op.weight
    shape = (-1,) + (1,) * (weight.dim() - 1)
    weight.mul_(scale.to(weight).view(shape))
    if op.bias is None:
        op.bias = nn.Parameter(torch.zeros_like(scale.to(weight)), requires_grad=False)
    op.bias.mul_(scale.to(weight)).add_(shift.to(weight))


@register("ssf")
class SSF(Method):
    """Per-channel scale and shift after every Linear, LayerNorm and the patch embedding."""

    config_cls = SSFConfig
    mergeable = True

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.ops: dict[str, nn.Module] = {}

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        c = self.config
        device = next(backbone.model.parameters()).device
        for name, op in ssf_targets(backbone):
            ssf = ScaleShift(_channels(op), c.init, c.init_std).to(device)
            op.add_module("ssf", ssf)
            self.handles.append(op.register_forward_hook(_ssf_hook))
            self.modules[name] = ssf
            self.ops[name] = op
        self.match_mode()

    def merge(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        for name, op in self.ops.items():
            ssf = self.modules[name]
            _fold(op, ssf.scale.detach(), ssf.shift.detach())
            del op.ssf
        self.modules, self.ops = {}, {}
