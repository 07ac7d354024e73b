"""Bi-LoRA: LoRA (r = 32, q and v) whose A and B are quantised to k bits per matrix.

Quantiser and storage: :mod:`heartbench.adapters.quant`. Initialisation (protocol.md):
A keeps nn.Linear's default init; B is trunc_normal(0, 0.001, +-0.002) when quantised,
because a zero matrix has no std, and zeros in fp32 mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from heartbench.adapters import quant
from heartbench.adapters.base import register
from heartbench.adapters.lora import LoRA, LoRAConfig, LowRankDelta


@dataclass
class BiLoRAConfig(LoRAConfig):
    rank: int = 32
    bits: int = 1  # type: ignore[assignment]  # a field here, a fixed 32 in LoRAConfig

    def validate(self) -> None:
        super().validate()
        quant.check_bits(self.bits)


@register("bilora")
class BiLoRA(LoRA):
    config_cls = BiLoRAConfig

    def make_delta(self, d_in: int, d_out: int) -> LowRankDelta:
        delta = super().make_delta(d_in, d_out)
        if self.config.bits < 32:
            nn.init.trunc_normal_(delta.B, mean=0.0, std=0.001, a=-0.002, b=0.002)
        return delta
