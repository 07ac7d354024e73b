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

Optimiser (Table 1's Full row comes from VPT's paper): VPT's fine-tuning recipe (KMnP/vpt,
``tune_vtab.py`` ``get_lrwd_range("finetune")`` and its solver defaults): SGD with momentum
0.9, base lr searched in {0.001, 0.0001, 0.0005, 0.005} and weight decay in {0.01, 0.001,
0.0001, 0.0}, the base lr scaled by batch size / 256 as ``tune_vtab.setup`` does; the
trainer's cosine schedule and warm-up apply as for every method. ``optimizer="adamw"``
uses the trainer's AdamW, lr and weight decay instead (the other methods' recipe).

Size on ViT-B/16 (``build_backbone("vit_base_patch16_224", 100)``, head excluded): patch
embedding 590,592 + cls token 768 + position embedding 151,296 + 12 blocks x 7,087,872 +
final norm 1,536 = 85,798,656 fp32 values = 343,194,624 bytes = 327.30 MiB; Table 1
lists Full at 327 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from heartbench.adapters.base import Method, MethodConfig, register, require
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


OPTIMIZERS = ("sgd", "adamw")


@dataclass
class FullConfig(MethodConfig):
    """VPT's fine-tuning optimiser (see the module docstring)."""

    optimizer: str = "sgd"
    lr: float = 0.001  # VPT's base lr, scaled by batch_size / 256 (sgd only)
    weight_decay: float = 0.0001  # sgd only; adamw uses the trainer's
    momentum: float = 0.9
    # Records stored before these keys used the trainer's AdamW.
    legacy: ClassVar[dict[str, Any]] = {"optimizer": "adamw"}

    def validate(self) -> None:
        require(self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        require(self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")


@register("full")
class Full(BackboneTensors):
    """Every backbone parameter (not the buffers) is trainable and stored."""

    config_cls = FullConfig

    def make_optimizer(self, params: list[nn.Parameter], train: dict[str, Any]
                       ) -> torch.optim.Optimizer | None:
        """VPT's SGD (lr = base lr * batch / 256), or None for the trainer's AdamW."""
        c = self.config
        if c.optimizer != "sgd":
            return None
        return torch.optim.SGD(params, lr=c.lr * train["batch_size"] / 256,
                               momentum=c.momentum, weight_decay=c.weight_decay)

    def selects(self, name: str, param: nn.Parameter) -> bool:
        return True
