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

Optimiser (Table 1's Full row comes from VPT's paper): VPT's fine-tuning recipe
(KMnP/vpt ``configs/base-finetune.yaml``: ``OPTIMIZER: "adamw"``, cosine, ``WARMUP_EPOCH: 5``,
100 epochs; ``tune_vtab.py`` ``get_lrwd_range("finetune")``: base lr in {0.001, 0.0001,
0.0005, 0.005} x weight decay in {0.01, 0.001, 0.0001, 0.0}, the base lr scaled by batch /
256 as ``tune_vtab.setup`` does; ``src/solver/optimizer.py``: no decay on biases, eps 1e-6):
``optimizer="vpt_adamw"`` (the default). The 5 warm-up epochs are a train key of the suite
(``[[methods]] train = { warmup_epochs = 5 }``). ``optimizer="sgd"`` is VPT's SGD recipe
(momentum 0.9, that of its prompt and linear runs; heartbench's default before
``vpt_adamw``), ``"adamw"`` the trainer's AdamW, lr and weight decay (records from before
these keys). :class:`VPTSolver` is shared with Linear and VPT (their recipe is ``"sgd"``).

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


# "sgd": VPT's SGD (prompt / linear); "vpt_adamw": VPT's AdamW (finetune); "adamw": the
# trainer's AdamW with the suite's train.lr / train.weight_decay (Table 9; old records).
OPTIMIZERS = ("sgd", "vpt_adamw", "adamw")


def check_solver(config: Any) -> None:
    """The shared checks of a config with VPT's solver keys."""
    require(config.optimizer in OPTIMIZERS,
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    require(config.lr > 0, f"lr must be positive, got {config.lr}")
    require(config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}")
    require(0 <= config.momentum < 1, f"momentum must be in [0, 1), got {config.momentum}")


def vpt_solver(kind: str, named: list[tuple[str, nn.Parameter]], head_bias: nn.Parameter | None,
               lr: float, weight_decay: float, momentum: float, batch_size: int
               ) -> torch.optim.Optimizer:
    """VPT's ``make_optimizer`` (KMnP/vpt src/solver/optimizer.py) at lr = base lr * batch /
    256 (``tune_vtab.setup``). "sgd": momentum, weight decay on every tensor but the
    classifier's bias. "vpt_adamw": AdamW (eps 1e-6) with no decay on tensors named
    ``*bias*``. Deviation: with weight decay > 0 VPT's AdamW decays at a fixed 0.01 and with
    0 it falls back to SGD; here the searched value is the decay, always with AdamW."""
    lr = lr * batch_size / 256
    if kind == "sgd":
        rest = [p for _, p in named if p is not head_bias]
        groups = [{"params": rest, "weight_decay": weight_decay}]
        if head_bias is not None and any(p is head_bias for _, p in named):
            groups.append({"params": [head_bias], "weight_decay": 0.0})
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    decay = [p for n, p in named if "bias" not in n]
    no_decay = [p for n, p in named if "bias" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=1e-6)


class VPTSolver:
    """Mixin of a :class:`Method` whose config has VPT's solver keys (``optimizer``, ``lr``,
    ``weight_decay``, ``momentum``): the trainer asks it for its optimiser."""

    backbone: Backbone | None
    config: Any

    def make_optimizer(self, params: list[nn.Parameter], train: dict[str, Any]
                       ) -> torch.optim.Optimizer | None:
        """VPT's solver for ``params`` (this method's and the head's), or None for "adamw"
        (the trainer's AdamW)."""
        c = self.config
        if c.optimizer == "adamw":
            return None
        assert self.backbone is not None
        names = {id(p): n for n, p in self.backbone.model.named_parameters()}
        named = [(names.get(id(p), ""), p) for p in params]
        head_bias = getattr(self.backbone.head, "bias", None)
        return vpt_solver(c.optimizer, named, head_bias, c.lr, c.weight_decay, c.momentum,
                          train["batch_size"])


@dataclass
class FullConfig(MethodConfig):
    """VPT's fine-tuning optimiser (see the module docstring)."""

    optimizer: str = "vpt_adamw"
    lr: float = 0.001  # VPT's base lr, scaled by batch_size / 256 (not for "adamw")
    weight_decay: float = 0.0001  # not for "adamw", which uses the trainer's
    momentum: float = 0.9  # "sgd" only
    # Records stored before these keys used the trainer's AdamW.
    legacy: ClassVar[dict[str, Any]] = {"optimizer": "adamw"}

    def validate(self) -> None:
        check_solver(self)


@register("full")
class Full(VPTSolver, BackboneTensors):
    """Every backbone parameter (not the buffers) is trainable and stored."""

    config_cls = FullConfig

    def selects(self, name: str, param: nn.Parameter) -> bool:
        return True
