"""Linear probing: only the classification head is trained (Table 1's "Linear" row).

The trainer always optimises the head, so the method itself trains and stores nothing:
``trainable_parameters()`` is empty and ``stored_state()`` is empty (0 bytes; Table 1: 0).
``merge`` is a no-op (the backbone is untouched).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from heartbench.adapters.base import MethodConfig, register
from heartbench.adapters.full import BackboneTensors


@dataclass
class LinearConfig(MethodConfig):
    """Linear probing has no hyper-parameters of its own."""


@register("linear")
class LinearProbe(BackboneTensors):
    """The whole backbone frozen; the head (trained by the trainer) is the only change."""

    config_cls = LinearConfig

    def selects(self, name: str, param: nn.Parameter) -> bool:
        return False
