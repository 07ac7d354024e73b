"""Bi-LoRA: LoRA (r = 32, q and v) whose A and B are quantised to k bits per matrix.

Quantiser and storage: :mod:`heartbench.adapters.quant`. Initialisation (protocol.md):
A keeps nn.Linear's default init; B is trunc_normal(0, 0.001, +-0.002) when quantised,
because a zero matrix has no std, and zeros in fp32 mode.

``destandardise``: ``"std"`` (the reference's level * std + mean) or ``"std_plus_eps"``
(level * (std + 1e-5) + mean), the legacy value of records stored before the key existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from heartbench.adapters import quant
from heartbench.adapters.base import register, require
from heartbench.adapters.lora import LoRA, LoRAConfig, LowRankDelta


@dataclass
class BiLoRAConfig(LoRAConfig):
    rank: int = 32
    bits: int = 1  # type: ignore[assignment]  # a field here, a fixed 32 in LoRAConfig
    destandardise: str = "std"  # quant.DESTANDARDISE
    legacy: ClassVar[dict[str, Any]] = {"destandardise": "std_plus_eps"}

    def validate(self) -> None:
        super().validate()
        quant.check_bits(self.bits)
        require(self.destandardise in quant.DESTANDARDISE,
                f"destandardise must be one of {', '.join(quant.DESTANDARDISE)},"
                f" got {self.destandardise!r}")


@register("bilora")
class BiLoRA(LoRA):
    config_cls = BiLoRAConfig

    def make_delta(self, d_in: int, d_out: int) -> LowRankDelta:
        delta = super().make_delta(d_in, d_out)
        delta.destandardise = self.config.destandardise
        if self.config.bits < 32:
            nn.init.trunc_normal_(delta.B, mean=0.0, std=0.001, a=-0.002, b=0.002)
        return delta
