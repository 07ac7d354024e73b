"""LoRA: low-rank updates on slices of timm's fused qkv projection.

Bi-LoRA's form (protocol.md): q += s * B(drop(A x)) and v += s * B(drop(A x)) with separate
A (r x d) and B (d x r) per target, no bias, dropout on the rank-r bottleneck and no alpha/r
factor: ``scale`` is the only multiplier. ``targets="qkv"`` puts one update on the whole
fused projection instead (NOAH's and PEFT's form).

:class:`LowRankDelta` also carries what Bi-LoRA and Heart-LoRA add: k-bit quantisation of
A and B, and a per-output-row mask that zeroes whole heads' updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from heartbench.adapters import quant
from heartbench.adapters.base import (
    Delta,
    MethodConfig,
    QKVMethod,
    parse_targets,
    register,
    require,
)

# (weight, its gradient) -> None; set by head scoring while it listens. ``listener`` gets
# the B the forward pass uses (quantised when bits < 32) and the gradient of the loss with
# respect to it; ``latent_listener`` gets the trainable parameter B itself and its gradient
# (through the quantiser's STE), what Bi-LoRA's ``adapter.weight`` / ``.grad`` hold.
GradListener = Callable[[torch.Tensor, torch.Tensor], None]


class LowRankDelta(Delta):
    """Delta(x) = scale * (B * row_mask) @ drop(A x), with optionally quantised A and B."""

    def __init__(self, d_in: int, d_out: int, rank: int, scale: float, dropout: float,
                 bits: int = 32) -> None:
        super().__init__()
        self.scale, self.bits = scale, bits
        self.destandardise = "std"  # quant.DESTANDARDISE; Bi-LoRA's config sets it
        self.A = nn.Parameter(torch.empty(rank, d_in))
        self.B = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's default, as PEFT
        # On the rank-r bottleneck (drop(A x)), as Bi-LoRA's Adapter.forward.
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.register_buffer("row_mask", torch.ones(d_out), persistent=True)
        self.masked = False  # True once any row is masked: skips a multiply otherwise
        self.listener: GradListener | None = None
        self.latent_listener: GradListener | None = None
        # Quantised weights read back from storage replace the latent ones.
        self.loaded: dict[str, torch.Tensor] | None = None

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) as used in the forward pass: quantised if bits < 32, unscaled, unmasked."""
        return self.down_weight(), self._forward_b()

    def down_weight(self) -> torch.Tensor:
        if self.loaded is not None:
            return self.loaded["A"]
        return quant.quantize_ste(self.A, self.bits, self.destandardise)

    def _forward_b(self) -> torch.Tensor:
        if self.loaded is not None:
            return self.loaded["B"]
        latent = self.B
        if self.latent_listener is not None and latent.requires_grad:
            latent = _listened(latent, self.latent_listener)
        return quant.quantize_ste(latent, self.bits, self.destandardise)

    def up_weight(self) -> torch.Tensor:
        b = self._forward_b()
        if self.listener is not None and b.requires_grad:
            b = _listened(b, self.listener)
        b = b * self.scale
        return b * self.row_mask[:, None] if self.masked else b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.drop(F.linear(x, self.down_weight())), self.up_weight())

    def delta_weight(self) -> torch.Tensor:
        return self.up_weight() @ self.down_weight()

    def set_row_mask(self, mask: torch.Tensor) -> None:
        self.row_mask.copy_(mask.to(self.row_mask))
        self.masked = bool((self.row_mask == 0).any())

    def kept_rows(self) -> torch.Tensor:
        return torch.nonzero(self.row_mask.cpu() != 0).flatten()

    # -- storage: masked rows of B are not stored --------------------------------
    def stored_state(self) -> dict[str, torch.Tensor]:
        rows = self.kept_rows()
        if self.bits == 32:
            a, b = self.effective()
            return {"A": a.detach(), "B": b.detach()[rows]}
        a, b = self.A, self.B
        if self.loaded is not None:  # re-storing a loaded adapter: already quantised
            a, b = self.loaded["A"], self.loaded["B"]
        packed_a = quant.pack_matrix(a, self.bits)
        packed_b = quant.pack_matrix(b, self.bits, rows)
        return {"A.codes": packed_a["codes"], "A.stats": packed_a["stats"],
                "B.codes": packed_b["codes"], "B.stats": packed_b["stats"]}

    def load_stored_state(self, state: dict[str, torch.Tensor]) -> None:
        rows = self.kept_rows()
        full_b = torch.zeros_like(self.B)
        if self.bits == 32:
            a, kept_b = state["A"], state["B"]
        else:
            a = quant.unpack_matrix({"codes": state["A.codes"], "stats": state["A.stats"]},
                                    self.bits, tuple(self.A.shape), self.destandardise)
            kept_b = quant.unpack_matrix({"codes": state["B.codes"], "stats": state["B.stats"]},
                                         self.bits, (len(rows), self.B.shape[1]),
                                         self.destandardise)
        full_b[rows] = kept_b.to(full_b)
        with torch.no_grad():
            if self.bits == 32:
                self.A.copy_(a)
                self.B.copy_(full_b)
            else:
                device = self.A.device
                self.loaded = {"A": a.to(device), "B": full_b.to(device)}


def _listened(weight: torch.Tensor, listener: GradListener) -> torch.Tensor:
    """A fresh non-leaf view of ``weight`` whose gradient goes to ``listener`` (this step)."""
    view = weight.view_as(weight)
    view.register_hook(lambda grad: listener(view.detach(), grad))
    return view


@dataclass
class LoRAConfig(MethodConfig):
    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1
    targets: str = "qv"

    def validate(self) -> None:
        require(self.rank > 0, f"rank must be a positive integer, got {self.rank}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.scale == self.scale, "scale must be a number, got NaN")
        parse_targets(self.targets)

    @property
    def bits(self) -> int:
        return 32


@register("lora")
class LoRA(QKVMethod):
    """Low-rank updates of q and v (or the whole fused qkv)."""

    config_cls = LoRAConfig

    def make_delta(self, d_in: int, d_out: int) -> LowRankDelta:
        c = self.config
        return LowRankDelta(d_in, d_out, c.rank, c.scale, c.dropout, bits=c.bits)
