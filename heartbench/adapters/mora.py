"""MoRA: one square high-rank matrix between parameter-free compression and decompression.

Follows the official MoRA repository (github.com/kongds/MoRA, ``peft-mora/src/peft/tuners/
lora/layer.py``, ``LoraLayer.update_layer`` / ``_apply_mora`` / ``Linear.get_delta_weight``):

* ``r_hat = int(sqrt((d_in + d_out) * rank) + 0.5)``, the side of a square matrix with about
  as many entries as LoRA rank ``rank`` on the same layer; for the RoPE variant it is made
  even (``r_hat // 2 * 2``, as in the repository's later revision, commit d0528b4, "type 6
  require new_r to be even for RoPE"). The matrix ``M`` (``lora_A.weight``, r_hat x r_hat)
  starts at zero, so the update is zero at initialisation; there is no scaling (1.0).
* ``variant="sharing"`` is ``mora_type=1``: the input is padded cyclically (x[:pad]
  appended) to a multiple of r_hat and its r_hat-wide groups are summed; the output of ``M``
  is repeated cyclically to d_out.
* ``variant="rope"`` is ``mora_type=6``: the padded input is cut into rb = ceil(d_in / r_hat)
  blocks of r_hat, each rotated RoPE-style with its block index as the position
  (``x*cos + rotate_half(x)*sin``, base 10000), multiplied by ``M`` block by block, and the
  blocks' outputs are concatenated (cut to d_out, or repeated cyclically when shorter).
* Dropout (the repository's ``lora_dropout``) acts on the input before compression.

Defaults: ``variant="rope"`` (type 6), which the MoRA README prescribes for small ranks
("type 1 (Sharing) for large lora ranks ... type 6 (RoPE based) for small lora ranks"; the
paper's MoRA matches LoRA r = 8), and ``dropout=0.1``, LoRA's, since the paper gives MoRA
"identical training hyper-parameters as LoRA".

Both are activation deltas (``forward(x)`` is the cheap r_hat-wide path); ``delta_weight()``
builds the equivalent dense d_out x d_in matrix for merging, vectorised rather than with the
repository's Python loops (the tests compare it with a port of those loops).

Sizes on ViT-B (q and v of 12 blocks, 768 x 768 each, rank 8): r_hat = int(sqrt(1536 * 8)
+ 0.5) = 111 for "sharing" (110 for "rope"), so 24 * 111**2 = 295,704 fp32 values =
1,182,816 bytes = 1.128 MiB ("rope": 1,161,600 bytes = 1.108 MiB). Table 1 of the paper
lists MoRA at 1.15 MB; in MiB (the unit that makes LoRA r=8 come out at its 1.13) the only
square side that rounds to 1.15 is r_hat = 112 (24 * 112**2 * 4 = 1,204,224 bytes = 1.148
MiB), one more than the repository's formula gives; in decimal MB no integer r_hat gives
1.15 (110 -> 1.16, 109 -> 1.14). We keep the repository's formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from heartbench.adapters.base import (
    Delta,
    MethodConfig,
    QKVMethod,
    parse_targets,
    qkv_slice,
    register,
    require,
)
from heartbench.backbones import Backbone
from heartbench.errors import UserError

VARIANTS = {"sharing": 1, "rope": 6}  # our name -> the repository's mora_type


def mora_rank(d_in: int, d_out: int, rank: int, variant: str = "sharing") -> int:
    """Side r_hat of MoRA's square matrix for a d_out x d_in layer and LoRA rank ``rank``."""
    r_hat = int(math.sqrt((d_in + d_out) * rank) + 0.5)
    if variant == "rope":
        r_hat = r_hat // 2 * 2
    return r_hat


def _cyclic(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x`` repeated along its last dim and cut to ``length`` (y[i] = x[i % n])."""
    n = x.shape[-1]
    if length == n:
        return x
    if length < n:
        return x[..., :length]
    return torch.cat([x] * (length // n) + [x[..., : length % n]], dim=-1)


def rope_tables(r_hat: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of shape (blocks, r_hat), computed exactly as the repository does."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, r_hat, 2).float() / r_hat))
    freqs = torch.outer(torch.arange(blocks), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class MoRADelta(Delta):
    """Delta(x) = decompress(M @ compress(drop(x))), M square, zero-initialised."""

    def __init__(self, d_in: int, d_out: int, rank: int, variant: str = "sharing",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.d_in, self.d_out, self.variant = d_in, d_out, variant
        r = self.r_hat = mora_rank(d_in, d_out, rank, variant)
        self.blocks = -(-d_in // r)  # ceil: the repository's sum_inter / rb1
        self.padded = self.blocks * r  # d_in + pad_size
        self.M = nn.Parameter(torch.zeros(r, r))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if variant == "rope":
            cos, sin = rope_tables(r, self.blocks)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        else:
            # counts[j, c]: how often input feature c lands in group slot j after padding.
            slots = torch.arange(self.padded)
            counts = torch.zeros(r, d_in)
            counts.index_put_((slots % r, slots % d_in), torch.ones(self.padded), accumulate=True)
            self.register_buffer("counts", counts, persistent=False)

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> (..., r_hat) for sharing, (..., blocks, r_hat) for RoPE."""
        x = _cyclic(x, self.padded).reshape(*x.shape[:-1], self.blocks, self.r_hat)
        if self.variant == "rope":
            return x * self.cos + _rotate_half(x) * self.sin
        return x.sum(dim=-2)

    def decompress(self, y: torch.Tensor) -> torch.Tensor:
        if self.variant == "rope":
            y = y.flatten(-2)
        return _cyclic(y, self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decompress(F.linear(self.compress(self.drop(x)), self.M))

    def delta_weight(self) -> torch.Tensor:
        r = self.r_hat
        if self.variant == "sharing":
            # Row o of dW is row (o mod r) of M @ counts.
            rows = torch.arange(self.d_out, device=self.M.device) % r
            return (self.M @ self.counts)[rows]
        # Block b maps padded inputs b*r.. to outputs b*r..: M diag(cos_b) + M diag(sin_b) P,
        # with P the rotate-half permutation (sign flip on the first half of its outputs).
        m_rot = torch.cat((self.M[:, r // 2:], -self.M[:, : r // 2]), dim=1)
        blocks = self.M * self.cos[:, None, :] + m_rot * self.sin[:, None, :]
        full = torch.block_diag(*blocks.unbind(0))  # padded x padded
        rows = torch.arange(self.d_out, device=self.M.device) % self.padded
        cols = torch.arange(self.padded, device=self.M.device) % self.d_in
        out = torch.zeros(self.d_out, self.d_in, dtype=full.dtype, device=full.device)
        # Padded input column i is input feature i mod d_in.
        return out.index_add(1, cols, full[rows])


@dataclass
class MoRAConfig(MethodConfig):
    rank: int = 8  # the LoRA rank whose parameter budget r_hat matches
    variant: str = "rope"  # type 6: the MoRA README's choice for small ranks
    targets: str = "qv"
    dropout: float = 0.1  # LoRA's (the paper: MoRA uses LoRA's hyper-parameters)

    def validate(self) -> None:
        require(self.rank > 0, f"rank must be a positive integer, got {self.rank}")
        require(self.variant in VARIANTS,
                f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        parse_targets(self.targets)


@register("mora")
class MoRA(QKVMethod):
    """MoRA on q and v (or the whole fused qkv) of every attention site."""

    config_cls = MoRAConfig

    def check_backbone(self, backbone: Backbone) -> None:
        c = self.config
        for site in backbone.sites:
            for target in parse_targets(c.targets):
                start, stop = qkv_slice(target, site.dim)
                if mora_rank(site.dim, stop - start, c.rank, c.variant) < 2:
                    raise UserError(
                        f"mora: rank {c.rank} gives a matrix smaller than 2x2 on layer "
                        f"{site.layer}'s {target} weight ({stop - start}x{site.dim}); "
                        f"use a larger rank")

    def make_delta(self, d_in: int, d_out: int) -> MoRADelta:
        c = self.config
        return MoRADelta(d_in, d_out, c.rank, c.variant, c.dropout)
