"""The k-bit per-matrix quantiser of Bi-LoRA against independent computations.

The reference is PETL-ViT's ``QLinear.forward`` (binary_adapter/utils.py):
``w = (W - mean) / (std + 1e-5)``, ``wb = q(w).data + w - w.data``, ``wb * std + mean``:
the 1e-5 guards the division only; de-standardising uses the plain std.

Levels: closed forms / the fixed-point property on N(0, 1) (statistics.NormalDist, not scipy).
Forward: a brute-force nearest-level loop. Gradient: autograd of the reference formula
written out separately, and its closed form (see test_ste_gradient).
Packing: a bit-string built by hand.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from heartbench.adapters import quant

PHI = NormalDist()


def test_one_bit_levels_are_phi_inverse_of_three_quarters():
    levels, thresholds = quant.normal_levels(1)
    q = PHI.inv_cdf(0.75)
    assert levels.tolist() == pytest.approx([-q, q], abs=1e-9)
    assert round(q, 4) == 0.6745
    assert thresholds.tolist() == pytest.approx([0.0], abs=1e-9)


def test_two_bit_levels_and_thresholds_to_four_decimals():
    levels, thresholds = quant.normal_levels(2)
    assert [round(v, 4) for v in levels.tolist()] == [-1.2657, -0.3778, 0.3778, 1.2657]
    assert [round(v, 4) + 0.0 for v in thresholds.tolist()] == [-0.8217, 0.0, 0.8217]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_levels_are_the_median_fixed_point(bits):
    # Each level is the median of its cell under N(0, 1); thresholds are midpoints.
    levels, thresholds = quant.normal_levels(bits)
    assert len(levels) == 2**bits and len(thresholds) == 2**bits - 1
    assert all(a < b for a, b in zip(levels, levels[1:]))
    assert levels.tolist() == pytest.approx((-levels[::-1]).tolist(), abs=1e-9)
    mids = [(a + b) / 2 for a, b in zip(levels, levels[1:])]
    assert thresholds.tolist() == pytest.approx(mids, abs=1e-12)
    edges = [0.0] + [PHI.cdf(t) for t in thresholds] + [1.0]
    for i, level in enumerate(levels):
        assert PHI.cdf(level) == pytest.approx((edges[i] + edges[i + 1]) / 2, abs=1e-8)


def brute_quantise(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(de-standardised quantised matrix, normalised levels h) by an element loop."""
    flat = [float(v) for v in w.flatten()]
    n = len(flat)
    mean = math.fsum(flat) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in flat) / (n - 1))
    levels = quant.normal_levels(bits)[0].tolist()
    hs = []
    for v in flat:
        z = (v - mean) / (std + 1e-5)
        hs.append(min(levels, key=lambda lv, z=z: abs(lv - z)))
    out = [h * std + mean for h in hs]  # the reference: wb * std_w + mean_w
    return (torch.tensor(out, dtype=torch.float64).view(w.shape),
            torch.tensor(hs, dtype=torch.float64).view(w.shape))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantize_ste_forward_equals_brute_force(bits):
    torch.manual_seed(bits)
    # float64 so that a tight tolerance separates std from std + 1e-5 (a 1e-5 * level change).
    for scale in (0.3, 1e-4):  # at std ~ 1e-4 the eps would be a 10 % error
        w = torch.randn(7, 5, dtype=torch.float64) * scale + 0.1 * scale
        expected, _ = brute_quantise(w, bits)
        got = quant.quantize_ste(w, bits)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12 * scale)
        # Exactly 2^bits distinct values at most.
        assert len(torch.unique(got)) <= 2**bits


def test_quantize_ste_fp32_is_identity():
    w = torch.randn(4, 3)
    assert quant.quantize_ste(w, 32) is w


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_ste_gradient(bits):
    torch.manual_seed(10 + bits)
    w0 = torch.randn(6, 9, dtype=torch.float64)
    upstream = torch.randn(6, 9, dtype=torch.float64)
    w = w0.clone().requires_grad_()
    (quant.quantize_ste(w, bits) * upstream).sum().backward()

    # Autograd of the reference formula with the rounding replaced by identity in the
    # backward: y = (h + n - stop(n)) * std + mean, n = (W - mean) / (std + eps), h the
    # brute-force levels (a constant).
    _, h = brute_quantise(w0, bits)
    v = w0.clone().requires_grad_()
    mean, std = v.mean(), v.std()
    n = (v - mean) / (std + 1e-5)
    y = (h + n - n.detach()) * std + mean
    (ref,) = torch.autograd.grad((y * upstream).sum(), v)
    torch.testing.assert_close(w.grad, ref)

    # Closed form of the same derivative, with r = std / (std + eps) and dstd/dW_k =
    # (W_k - mean) / ((N - 1) std): r G_k + (1 - r) mean(G) + <G, h - r n> dstd/dW_k.
    m, s = w0.mean(), w0.std()
    r = s / (s + 1e-5)
    nn_ = (w0 - m) / (s + 1e-5)
    dstd = (w0 - m) / ((w0.numel() - 1) * s)
    closed = r * upstream + (1 - r) * upstream.mean() + (upstream * (h - r * nn_)).sum() * dstd
    torch.testing.assert_close(w.grad, closed)


def brute_pack(codes: list[int], bits: int) -> list[int]:
    """Codes as a bit string, first code in the high bits, zero-padded to whole bytes."""
    bitstring = "".join(format(c, f"0{bits}b") for c in codes)
    bitstring += "0" * (-len(bitstring) % 8)
    return [int(bitstring[i:i + 8], 2) for i in range(0, len(bitstring), 8)]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (13, 3), (2, 33)])
def test_pack_unpack_round_trip(bits, shape):
    gen = torch.Generator().manual_seed(bits * 100 + len(shape))
    codes = torch.randint(0, 2**bits, shape, generator=gen)
    packed = quant.pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert packed.tolist() == brute_pack(codes.flatten().tolist(), bits)
    back = quant.unpack_codes(packed, bits, codes.numel())
    assert torch.equal(back, codes.flatten().long())


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("rows", [None, [0, 2, 3, 6], [5]])
def test_pack_matrix_matches_quantize_ste_bitwise(bits, rows):
    torch.manual_seed(bits)
    w = torch.randn(7, 5) * 0.01 - 0.003
    forward = quant.quantize_ste(w, bits).detach()
    index = None if rows is None else torch.tensor(rows)
    stored = quant.pack_matrix(w, bits, index)
    kept = 7 if rows is None else len(rows)
    assert stored["codes"].numel() == math.ceil(kept * 5 * bits / 8)
    assert stored["stats"].dtype == torch.float32 and stored["stats"].numel() == 2
    back = quant.unpack_matrix(stored, bits, (kept, 5))
    expected = forward if rows is None else forward[index]
    assert torch.equal(back, expected)


@pytest.mark.parametrize("bits", [0, 3, 16, 64])
def test_check_bits_rejects_unsupported(bits):
    from heartbench.errors import UserError

    with pytest.raises(UserError, match="bits"):
        quant.check_bits(bits)
