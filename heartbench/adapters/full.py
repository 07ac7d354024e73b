"""Full fine-tuning: every backbone tensor is trained in place (Table 1's "Full" row).

:class:`BackboneTensors` is the shared machinery of the methods that train the backbone's
*own* tensors instead of inserting modules (``full``, ``bitfit``, ``linear``): a subclass
says which named parameters it trains (:meth:`BackboneTensors.selects`); ``attach`` turns
``requires_grad`` on for exactly those, ``stored_state`` returns them under their names in
the timm model (``blocks.0.attn.qkv.weight``, ...) and ``load_stored`` copies them back
into a freshly built backbone. The head is never part of the stored state (``save_adapter``
writes it separately).

Merging: the trained tensors already *are* the backbone's weights, so there is nothing to
fold; ``merge`` is a no-op that keeps the logits and the module structure (``mergeable``).

Size on ViT-B/16 (``build_backbone("vit_base_patch16_224", 100)``, head excluded): patch
embedding 590,592 + cls token 768 + position embedding 151,296 + 12 blocks x 7,087,872 +
final norm 1,536 = 85,798,656 fp32 values = 343,194,624 bytes = 327.30 MiB; Table 1
lists Full at 327 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters.base import Method, MethodConfig, register
from heartbench.backbones import Backbone
from heartbench.errors import UserError


class BackboneTensors(Method):
    """A method whose trainable state is a subset of the backbone's own parameters."""

    mergeable = True

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.params: dict[str, nn.Parameter] = {}

    def selects(self, name: str, param: nn.Parameter) -> bool:
        """Whether the backbone parameter ``name`` is trained by this method (override)."""
        raise NotImplementedError

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        head = {id(p) for p in backbone.head_parameters()}
        for name, param in backbone.model.named_parameters():
            if id(param) in head:
                continue
            chosen = self.selects(name, param)
            param.requires_grad_(chosen)
            if chosen:
                self.params[name] = param

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def merge(self) -> None:
        """Nothing to fold: the trained tensors are the backbone's weights already."""

    def stored_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.params.items()}

    def load_stored(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.params) - set(state))
        extra = sorted(set(state) - set(self.params))
        if missing or extra:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
            raise UserError(f"{self.name} adapter does not fit this backbone: {what}")
        with torch.no_grad():
            for name, param in self.params.items():
                value = state[name]
                if tuple(value.shape) != tuple(param.shape):
                    raise UserError(f"{self.name} adapter does not fit this backbone: {name!r} has"
                                    f" shape {tuple(value.shape)}, expected {tuple(param.shape)}")
                param.copy_(value.to(param))


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning has no hyper-parameters of its own (lr etc. belong to the trainer)."""


@register("full")
class Full(BackboneTensors):
    """Every backbone parameter (not the buffers) is trainable and stored."""

    config_cls = FullConfig

    def selects(self, name: str, param: nn.Parameter) -> bool:
        return True
