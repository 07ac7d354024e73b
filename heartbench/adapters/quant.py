"""The k-bit per-matrix quantiser of Bi-LoRA (shared by Bi-LoRA and Heart-LoRA).

A matrix W is standardised with its own mean and std, w = (W - mean) / (std + 1e-5), each
entry is replaced by the nearest of 2^k levels of a standard normal, the gradient passes
straight through (STE), and the result is de-standardised with the same (not detached)
mean and the plain std: level * std + mean, as PETL-ViT's ``QLinear.forward`` and its
``load`` do (the 1e-5 only guards the division). ``destandardise="std_plus_eps"`` multiplies
by std + 1e-5 instead: what heartbench did before (records written before Bi-LoRA's
``destandardise`` key reproduce with it). The levels are the fixed point of "level = median
of its cell, threshold = midpoint of neighbouring levels" on N(0, 1): 1 bit gives +-0.6745 = Phi^-1(0.75), 2 bits
+-0.3778, +-1.2657 with thresholds 0, +-0.8217 (protocol.md).

Storage: the k-bit codes packed into bytes plus the fp32 (mean, std) of the matrix.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from scipy import optimize
from scipy.stats import norm

from heartbench.errors import UserError

VALID_BITS = (1, 2, 4, 8, 32)
EPS = 1e-5
# How a level goes back to the matrix's scale: level * std + mean (the reference), or
# level * (std + EPS) + mean (heartbench before the reference's form was adopted).
DESTANDARDISE = ("std", "std_plus_eps")


def check_bits(bits: int, where: str = "bits") -> None:
    if bits not in VALID_BITS:
        raise UserError(f"{where}: {bits!r} is not supported; expected one of {VALID_BITS}")


def destandardised(levels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   destandardise: str = "std") -> torch.Tensor:
    """Levels back on the matrix's scale (see :data:`DESTANDARDISE`)."""
    if destandardise == "std_plus_eps":
        return levels * (std + EPS) + mean
    if destandardise != "std":
        raise ValueError(f"destandardise must be one of {DESTANDARDISE}, got {destandardise!r}")
    return levels * std + mean


@cache
def normal_levels(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(levels, thresholds) of the k-bit standard-normal quantiser, ascending."""
    n = 2**bits

    def cell_medians(levels: np.ndarray) -> np.ndarray:
        thresholds = (levels[1:] + levels[:-1]) / 2
        edges = np.concatenate([[0.0], norm.cdf(thresholds), [1.0]])
        return norm.ppf((edges[1:] + edges[:-1]) / 2)

    # Solve levels = cell_medians(levels) with a root finder: plain iteration converges
    # too slowly at 8 bits (after 10,000 steps the tail levels were still ~0.08 off).
    start = norm.ppf((np.arange(n) + 0.5) / n)
    levels = optimize.root(lambda lv: cell_medians(lv) - lv, start, tol=1e-13).x
    if np.max(np.abs(cell_medians(levels) - levels)) > 1e-10:
        raise RuntimeError(f"{bits}-bit normal quantiser levels did not converge")
    return levels, (levels[1:] + levels[:-1]) / 2


def _tables(bits: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    levels, thresholds = normal_levels(bits)
    return (torch.as_tensor(levels, dtype=like.dtype, device=like.device),
            torch.as_tensor(thresholds, dtype=like.dtype, device=like.device))


def standardise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, std = weight.mean(), weight.std()
    return (weight - mean) / (std + EPS), mean, std


def codes_of(normalised: torch.Tensor, bits: int) -> torch.Tensor:
    """Index of each entry's level (int64), thresholds between levels."""
    _, thresholds = _tables(bits, normalised)
    return torch.bucketize(normalised, thresholds)


def quantize_ste(weight: torch.Tensor, bits: int, destandardise: str = "std") -> torch.Tensor:
    """Quantise ``weight`` per matrix to ``bits`` with a straight-through gradient."""
    if bits == 32:
        return weight
    normalised, mean, std = standardise(weight)
    levels, _ = _tables(bits, weight)
    hard = levels[codes_of(normalised.detach(), bits)]
    # Forward: the level; backward: identity w.r.t. the normalised weight (STE).
    quantised = hard + (normalised - normalised.detach())  # exactly `hard` in forward
    return destandardised(quantised, mean, std, destandardise)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack k-bit codes (any shape) into a flat uint8 tensor, first code in the high bits."""
    per_byte = 8 // bits
    flat = codes.flatten().to(torch.uint8)
    pad = (-flat.numel()) % per_byte
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    flat = flat.view(-1, per_byte).to(torch.int32)
    shifts = torch.arange(per_byte - 1, -1, -1, dtype=torch.int32) * bits
    return (flat << shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes` (int64 codes, flat, ``numel`` long)."""
    per_byte = 8 // bits
    shifts = torch.arange(per_byte - 1, -1, -1, dtype=torch.int32) * bits
    values = (packed.to(torch.int32).unsqueeze(1) >> shifts) & (2**bits - 1)
    return values.flatten()[:numel].long()


def pack_matrix(weight: torch.Tensor, bits: int, rows: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """Storage of a quantised matrix: packed codes of ``rows`` (all by default) + (mean, std).

    Mean and std are those of the whole matrix, so dropped rows do not change the kept ones.
    """
    weight = weight.detach().float().cpu()
    normalised, mean, std = standardise(weight)
    codes = codes_of(normalised, bits)
    if rows is not None:
        codes = codes[rows]
    return {"codes": pack_codes(codes, bits),
            "stats": torch.stack([mean, std]).to(torch.float32)}


def unpack_matrix(stored: dict[str, torch.Tensor], bits: int, shape: tuple[int, int],
                  destandardise: str = "std") -> torch.Tensor:
    """The de-standardised quantised values of a stored matrix of ``shape`` (kept rows)."""
    codes = unpack_codes(stored["codes"], bits, shape[0] * shape[1]).view(shape)
    levels, _ = _tables(bits, stored["stats"])
    mean, std = stored["stats"][0], stored["stats"][1]
    return destandardised(levels[codes], mean, std, destandardise)
