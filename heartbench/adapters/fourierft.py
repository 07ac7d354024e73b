"""FourierFT: a sparse trainable spectrum whose inverse 2-D DFT is the weight update.

As in PEFT 0.21.2 (``peft/tuners/fourierft/layer.py``)::

    dW = scaling * Re(ifft2(S))

where ``S`` is a ``d_out x d_in`` spectrum that is zero except at ``n_frequency`` trainable
entries. The entries' locations are the first ``n_frequency`` values of
``torch.randperm(d_out * d_in, generator=torch.Generator().manual_seed(random_loc_seed))``,
split into (row, column) = (i // d_in, i % d_in): the same locations for every layer of one
shape, and the same as PEFT's for the same seed, so identical coefficients give identical
outputs. Like PEFT (``init_weights=False``, its default) the coefficients start as
``torch.randn``: the update is *not* zero at initialisation (``zero_init=True`` gives PEFT's
``init_weights=True``).

Speed (why this is not PEFT's code): PEFT scatters the coefficients into a dense complex
``d_out x d_in`` spectrum, runs a full ``ifft2``, keeps the real part and then runs a second
matmul ``x @ dW.T`` beside the frozen one. Here the update is a *weight* delta
(``on_weight``: :class:`~heartbench.adapters.base.AdaptedLinear` adds it to the weight
slice before its one matmul), and it is computed with a half-size real inverse FFT:
``Re(ifft2(S)) = irfft2(H)`` where ``H`` is the non-redundant half (columns
``0 .. d_in // 2``) of the Hermitian-symmetrised spectrum ``(S[u, v] + S[-u, -v]) / 2``.
``H`` is real, gets each coefficient at most twice (``index_add``), and ``irfft2`` returns a
real matrix directly: exact up to float32 rounding (about 5e-8 absolute on ViT-B shapes).
Measured on ViT-B shapes (768 x 768 slice, n_frequency 12,288; this repository's shared
2-core CPU, 1 thread, best of 25, so only the ratios mean much): the delta alone takes
about 2.2 ms forward and 4.0-4.7 ms forward + backward, against 3.0 ms and 6.0-7.0 ms for
PEFT's dense ``ifft2``; an ``E_out diag(c) E_in^T`` form with precomputed cos/sin factors
costs about 0.7 s (two 768 x 12,288 x 768 matmuls). On a whole fused qkv (768 -> 2304,
8 x 197 tokens, forward + backward including the input's gradient) the layer takes about
0.63-0.65x PEFT's ``FourierFTLinear``: the removed second matmul (and its input-gradient
matmul) is the saving; the FFT is about 2 % of the layer's time either way.
AdaptedLinear's backward computes the weight gradient of the updated slices only (for
``targets="qv"`` the k rows cost no weight-gradient matmul) and recomputes ``delta_weight()``
instead of keeping the updated weight per layer (``recompute_weight``). What remains over a
frozen backbone (``python -m heartbench bench``) is the dense weight gradient of each updated
slice (``grad_out^T x``: +8 % of ViT-B's step FLOPs for q and v, +13 % for the whole qkv)
plus the FFTs; PEFT adds three such matmuls (+37 %), which bounds heartbench / PEFT from below
at about 0.82 for the whole qkv and 0.79 for q, v.

Size. The default ``n_frequency = 12288`` equals LoRA r=8's parameter count per q/v slice of
ViT-B (2 * 768 * 8), which is what the paper says it matched ("the same order of parameter
count as LoRA"): 24 slices * 12,288 coefficients * 4 bytes = 1,179,648 bytes = 1.125 MiB,
LoRA's 1.13 in Table 1. The paper lists FourierFT at 1.20 MB; in MiB (the unit that makes
LoRA's 1.13 come out) that is about 314,600 coefficients, i.e. about 13,100 per q/v slice
(6.7 % more than ours); the paper does not say which n_frequency it used. Only the
coefficients are stored (fp32); the locations are re-derived from ``random_loc_seed``, which
is part of the config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

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


@functools.lru_cache(maxsize=16)
def _locations(d_out: int, d_in: int, n_frequency: int, seed: int) -> torch.Tensor:
    # Cached: every layer of one shape has the same locations, and randperm over the
    # d_out * d_in grid is the slow part of building them.
    flat = torch.randperm(d_out * d_in, generator=torch.Generator().manual_seed(seed))
    flat = flat[:n_frequency]
    return torch.stack([flat // d_in, flat % d_in])


def spectrum_locations(d_out: int, d_in: int, n_frequency: int, seed: int) -> torch.Tensor:
    """(2, n_frequency) long tensor of (row, column) spectrum entries, exactly as PEFT's."""
    return _locations(d_out, d_in, n_frequency, seed).clone()


def half_spectrum_index(d_out: int, d_in: int, locations: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each coefficient lands in the flattened half spectrum ``H`` and which one.

    Coefficient k at (u, v) contributes c_k / 2 at (u, v) and at (-u, -v) (mod the shape);
    ``H`` keeps the columns 0 .. d_in // 2, so each contribution is kept iff its column is
    there (the self-conjugate columns 0 and d_in / 2 keep both, as they must).
    Returns (flat index into H of shape (d_out, d_in // 2 + 1), coefficient index).
    """
    half = d_in // 2 + 1
    u, v = locations[0], locations[1]
    u2, v2 = (-u) % d_out, (-v) % d_in
    keep1, keep2 = v < half, v2 < half
    flat = torch.cat([u[keep1] * half + v[keep1], u2[keep2] * half + v2[keep2]])
    take = torch.cat([torch.nonzero(keep1).flatten(), torch.nonzero(keep2).flatten()])
    return flat, take


class FourierDelta(Delta):
    """dW = scaling * Re(ifft2(S)), S sparse with ``n_frequency`` trainable entries."""

    @property
    def on_weight(self) -> bool:  # type: ignore[override]
        # Folded into W (one matmul) in fp32. Under low-precision autocast the fold would
        # round dW at W's precision (dW is often under 2^-8 of W: 25 % error at std 4e-4),
        # so there dW gets its own matmul, like LoRA's, and is rounded at its own scale.
        return not torch.is_autocast_enabled(self.spectrum.device.type)

    # delta_weight() is deterministic and costs one small inverse FFT: AdaptedLinear computes
    # it again in backward instead of keeping the updated d_out x d_in weight per layer
    # (85 MB on ViT-B at any batch size; about 1 % of a step to recompute).
    recompute_weight: ClassVar[bool] = True

    def __init__(self, d_in: int, d_out: int, n_frequency: int, scaling: float, seed: int,
                 zero_init: bool = False) -> None:
        super().__init__()
        self.d_in, self.d_out, self.scaling, self.seed = d_in, d_out, scaling, seed
        # torch.randn from the global generator, as PEFT's update_layer does.
        self.spectrum = nn.Parameter(torch.zeros(n_frequency) if zero_init
                                     else torch.randn(n_frequency))
        flat, take = half_spectrum_index(d_out, d_in, self.locations())
        # Derived from the seed: never stored, rebuilt on attach.
        self.register_buffer("flat", flat, persistent=False)
        self.register_buffer("take", take, persistent=False)

    @property
    def n_frequency(self) -> int:
        return self.spectrum.numel()

    def locations(self) -> torch.Tensor:
        return spectrum_locations(self.d_out, self.d_in, self.n_frequency, self.seed)

    def delta_weight(self) -> torch.Tensor:
        half = self.d_in // 2 + 1
        # The 1/2 of the symmetrisation and the scaling ride on the n values, not the
        # dense matrix.
        values = self.spectrum.float()[self.take] * (0.5 * self.scaling)
        h = torch.zeros(self.d_out * half, dtype=values.dtype, device=values.device)
        h = h.index_add(0, self.flat, values).view(self.d_out, half)
        weight = torch.fft.irfft2(h, s=(self.d_out, self.d_in))
        # As PEFT: the FFT runs in float32, the update comes back in the coefficients' dtype.
        return weight.to(self.spectrum.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Only used if someone calls the delta directly: AdaptedLinear uses delta_weight.
        return nn.functional.linear(x, self.delta_weight().to(x.dtype))


@dataclass
class FourierFTConfig(MethodConfig):
    # LoRA r=8's parameter count per ViT-B q/v slice (2 * 768 * 8); PEFT's default is 1000.
    n_frequency: int = 12288
    # PEFT's suggestion for ViT-B/L (its default, for RoBERTa, is 150).
    scaling: float = 300.0
    random_loc_seed: int = 777
    targets: str = "qv"
    # PEFT's init_weights=True: coefficients start at zero (PEFT's default is random normal).
    zero_init: bool = False

    def validate(self) -> None:
        require(self.n_frequency > 0,
                f"n_frequency must be a positive integer, got {self.n_frequency}")
        require(self.scaling == self.scaling, "scaling must be a number, got NaN")
        require(self.random_loc_seed >= 0,
                f"random_loc_seed must be a non-negative integer, got {self.random_loc_seed}")
        parse_targets(self.targets)


@register("fourierft")
class FourierFT(QKVMethod):
    """FourierFT on q and v (or the whole fused qkv) of every attention site."""

    config_cls = FourierFTConfig

    def check_backbone(self, backbone: Backbone) -> None:
        n = self.config.n_frequency
        for site in backbone.sites:
            for target in parse_targets(self.config.targets):
                start, stop = qkv_slice(target, site.dim)
                entries = (stop - start) * site.dim
                if n > entries:
                    raise UserError(
                        f"fourierft: n_frequency {n} exceeds the {entries} entries of layer "
                        f"{site.layer}'s {target} weight ({stop - start}x{site.dim}) on backbone "
                        f"{backbone.name!r}; use n_frequency <= {entries}")

    def make_delta(self, d_in: int, d_out: int) -> FourierDelta:
        c = self.config
        return FourierDelta(d_in, d_out, c.n_frequency, c.scaling, c.random_loc_seed,
                            c.zero_init)
