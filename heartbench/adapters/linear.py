"""Linear probing: only the classification head is trained (Table 1's "Linear" row).

The trainer always optimises the head, so the method itself trains and stores nothing:
``trainable_parameters()`` is empty and ``stored_state()`` is empty (0 bytes; Table 1: 0).
``merge`` is a no-op (the backbone is untouched).

Optimiser (Table 1's Linear row comes from VPT's paper): VPT's linear recipe (KMnP/vpt
``configs/base-linear.yaml``: SGD, momentum 0.9, cosine, ``WARMUP_EPOCH: 10``;
``tune_vtab.py`` ``get_lrwd_range("linear")``: base lr in {50, 25, 10, 5, 2.5, 1, 0.5, 0.25,
0.1, 0.05} x weight decay in {0.01, 0.001, 0.0001, 0}, lr scaled by batch / 256):
``optimizer="sgd"`` (the default, :class:`~heartbench.adapters.full.VPTSolver`).
``optimizer="adamw"``: the trainer's AdamW (Table 9; records from before the key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from heartbench.adapters.base import MethodConfig, register
from heartbench.adapters.full import BackboneTensors, VPTSolver, check_solver

# VPT's solver keys, added after the committed records (which trained with the trainer's
# AdamW): left out of a run's identity at these values (MethodConfig.added).
SOLVER_ADDED: dict[str, Any] = {"optimizer": "adamw", "lr": 0.25, "weight_decay": 0.0001,
                                "momentum": 0.9}


@dataclass
class LinearConfig(MethodConfig):
    """VPT's linear-probing solver (see the module docstring)."""

    optimizer: str = "sgd"
    lr: float = 0.25  # VPT's base lr, scaled by batch_size / 256
    weight_decay: float = 0.0001  # base-linear.yaml
    momentum: float = 0.9
    legacy: ClassVar[dict[str, Any]] = {"optimizer": "adamw"}
    added: ClassVar[dict[str, Any]] = SOLVER_ADDED

    def validate(self) -> None:
        check_solver(self)


@register("linear")
class LinearProbe(VPTSolver, BackboneTensors):
    """The whole backbone frozen; the head (trained by the trainer) is the only change."""

    config_cls = LinearConfig

    def selects(self, name: str, param: nn.Parameter) -> bool:
        return False
