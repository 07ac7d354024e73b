"""Heart-LoRA: responsiveness scores against autograd of per-head gates, head masks,
selection modes, stored size and the Swin per-stage ratio."""

from __future__ import annotations

from statistics import NormalDist

import pytest
import torch
from torch.nn import functional as F

from heartbench.adapters import create_method
from heartbench.adapters.lora import LowRankDelta
from heartbench.backbones import meta_backbone
from heartbench.errors import UserError

Q1 = NormalDist().inv_cdf(0.75)  # the 1-bit level


def one_bit(w: torch.Tensor) -> torch.Tensor:
    """Bi-LoRA's 1-bit quantiser written out: sign of the standardised entry times Phi^-1(.75)."""
    mean, std = w.mean(), w.std()
    return torch.where(w - mean > 0, Q1, -Q1) * (std + 1e-5) + mean


def heart(tiny, **config):
    backbone = tiny()
    torch.manual_seed(5)
    method = create_method("heart_lora", {"rank": 4, "dropout": 0.0, **config})
    method.attach(backbone)
    backbone.model.eval()  # deterministic forward (no drop-path); gradients still flow
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():  # non-zero B so the scores are not all zero
        for delta in method.modules.values():
            delta.B.copy_(torch.randn(delta.B.shape, generator=gen) * 0.05)
    return backbone, method


# ---------------------------------------------------------------------------
# Scores: Taylor = dL/dp_i for a gate p_i on head i's update; norms by hand
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 32])
def test_scores_equal_gate_gradients(tiny, monkeypatch, bits):
    backbone, method = heart(tiny, bits=bits, scale=3.0, ne=2)
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    heads = backbone.sites[0].num_heads

    # The library: the trainer's hooks around one scoring step (warm-up = 1 epoch).
    method.on_train_start(epochs=3, warmup_epochs=1, steps_per_epoch=1)
    method.on_epoch_start(0)
    F.cross_entropy(backbone.model(x), y).backward()
    raw = {k: [t.clone() for t in v] for k, v in method.raw.items()}
    steps = list(method.steps)
    method.on_epoch_end(0)
    chosen_mask = method.mask

    # Brute force: re-run with each delta computed by hand, its update per head times a gate.
    names = {id(d): n for n, d in method.modules.items()}
    gates = {n: torch.ones(heads, requires_grad=True) for n in method.modules}
    quant = one_bit if bits == 1 else (lambda w: w)
    ups = {n: quant(d.B.detach()).requires_grad_() for n, d in method.modules.items()}

    def gated(self, inp):
        n = names[id(self)]
        out = self.scale * F.linear(F.linear(inp, quant(self.A)), ups[n])
        out = out.unflatten(-1, (heads, -1)) * gates[n][:, None]
        return out.flatten(-2)

    monkeypatch.setattr(LowRankDelta, "forward", gated)
    method.apply_mask([[1] * heads for _ in backbone.sites])  # all heads on again
    loss = F.cross_entropy(backbone.model(x), y)
    order = list(method.modules)
    grads = torch.autograd.grad(loss, [gates[n] for n in order] + [ups[n] for n in order])
    gate_grad = dict(zip(order, grads[:len(order)]))
    up_grad = dict(zip(order, grads[len(order):]))

    assert steps == [1] * len(backbone.sites)
    per_layer_sum = []
    for site in backbone.sites:
        total = torch.zeros(heads)
        for t, target in enumerate("qv"):
            n = f"layer{site.layer}.{target}"
            ref = gate_grad[n]
            assert ref.abs().max() > 0
            tol = dict(rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
            torch.testing.assert_close(raw["taylor"][site.layer][t], ref, **tol)
            # Eq. 5 as Algorithm 1 writes it: sum of weight * grad over head i's rows of B.
            w, g = ups[n].detach().view(heads, -1), up_grad[n].view(heads, -1)
            torch.testing.assert_close((w * g).sum(1), ref, **tol)
            torch.testing.assert_close(raw["weight_l2"][site.layer][t],
                                       w.pow(2).sum(1).sqrt(), rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(raw["grad_l2"][site.layer][t], g.pow(2).sum(1).sqrt(),
                                       rtol=1e-4, atol=1e-6 * float(g.abs().max()))
            total += ref
        per_layer_sum.append(total)

    # Global mode masks the ne heads with the lowest dL/dp summed over q, v and layers.
    lowest = torch.argsort(sum(per_layer_sum))[:2].tolist()
    assert chosen_mask == [[0 if h in lowest else 1 for h in range(heads)]] * len(per_layer_sum)


def test_scores_are_zero_with_zero_b(tiny):
    backbone, method = heart(tiny, bits=32)
    with torch.no_grad():
        for delta in method.modules.values():
            delta.B.zero_()
    method.listen(True)
    F.cross_entropy(backbone.model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    method.listen(False)
    assert all(torch.count_nonzero(t) == 0 for t in method.raw["taylor"])
    assert all(torch.count_nonzero(t) > 0 for t in method.raw["grad_l2"])


# ---------------------------------------------------------------------------
# The mask zeroes exactly the chosen heads' q and v updates
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 32])
def test_mask_zeroes_exactly_the_chosen_heads(tiny, bits):
    backbone, method = heart(tiny, bits=bits)
    chosen = {0: [1, 4], 1: [7]}
    mask = [[0 if h in chosen[s.layer] else 1 for h in range(s.num_heads)]
            for s in backbone.sites]
    for site in backbone.sites:
        qkv, dim, hd = site.qkv, site.dim, site.head_dim
        x = torch.randn(2, 9, dim)
        with torch.no_grad():
            base = qkv.base(x)
            method.apply_mask([[1] * s.num_heads for s in backbone.sites])
            unmasked = qkv(x)
            method.apply_mask(mask)
            masked = qkv(x)
        assert torch.equal(masked[..., dim:2 * dim], base[..., dim:2 * dim])  # k untouched
        assert torch.equal(unmasked[..., dim:2 * dim], base[..., dim:2 * dim])
        for offset in (0, 2 * dim):  # q, then v
            for h in range(site.num_heads):
                rows = slice(offset + h * hd, offset + (h + 1) * hd)
                assert not torch.allclose(unmasked[..., rows], base[..., rows])
                if h in chosen[site.layer]:
                    assert torch.equal(masked[..., rows], base[..., rows])
                else:
                    assert torch.equal(masked[..., rows], unmasked[..., rows])


# ---------------------------------------------------------------------------
# Selection: global vs per-layer, front, random
# ---------------------------------------------------------------------------
def set_raw(method, taylor: list[torch.Tensor]) -> None:
    method.raw["taylor"] = [t.clone() for t in taylor]
    method.raw["weight_l2"] = [t.abs() for t in taylor]
    method.raw["grad_l2"] = [t.abs() + 1 for t in taylor]
    method.steps = [1] * len(taylor)


def test_global_and_per_layer_choose_differently(tiny):
    # Layer 0: head 0 clearly lowest. Layer 1: head 0 very high, head 5 slightly low.
    # Summed over layers head 5 is lowest; per layer, layer 0 picks head 0.
    taylor = [torch.zeros(2, 12), torch.zeros(2, 12)]
    taylor[0][0, 0], taylor[0][1, 0] = -6.0, -4.0
    taylor[1][0, 0], taylor[1][1, 5] = 20.0, -1.0
    masks = {}
    for mode in ("global", "per_layer"):
        _, method = heart(tiny, ne=1, mode=mode)
        set_raw(method, taylor)
        masks[mode] = method.compute_mask()
    off = lambda heads: [[0 if h in hs else 1 for h in range(12)] for hs in heads]  # noqa: E731
    assert masks["global"] == off([[5], [5]])
    assert masks["per_layer"] == off([[0], [5]])


@pytest.mark.parametrize("score", ["taylor", "neg_taylor", "abs_taylor", "weight_l2", "grad_l2"])
@pytest.mark.parametrize("mode", ["global", "per_layer"])
def test_score_variants_pick_lowest(tiny, score, mode):
    gen = torch.Generator().manual_seed(11)
    taylor = [torch.randn(2, 12, generator=gen) for _ in range(2)]
    _, method = heart(tiny, ne=3, score=score, mode=mode)
    set_raw(method, taylor)
    variant = {"taylor": lambda t: t, "neg_taylor": lambda t: -t,
               "abs_taylor": lambda t: t.abs(), "weight_l2": lambda t: t.abs(),
               "grad_l2": lambda t: t.abs() + 1}[score]
    per_layer = [variant(t).sum(0).tolist() for t in taylor]
    if mode == "global":
        per_layer = [[a + b for a, b in zip(*per_layer)]] * 2
    expected = []
    for values in per_layer:
        lowest = sorted(range(12), key=lambda h, v=values: v[h])[:3]
        expected.append([0 if h in lowest else 1 for h in range(12)])
    assert method.compute_mask() == expected


def test_front_masks_the_first_ne_heads(tiny):
    _, method = heart(tiny, ne=4, score="front")
    set_raw(method, [torch.randn(2, 12), torch.randn(2, 12)])
    assert method.compute_mask() == [[0] * 4 + [1] * 8] * 2


def test_random_is_seeded(tiny):
    def mask(seed, mode="global"):
        _, method = heart(tiny, ne=3, score="random", mask_seed=seed, mode=mode)
        return method.compute_mask()

    assert mask(0) == mask(0)
    assert mask(0) != mask(1)
    assert all(m.count(0) == 3 for m in mask(2, "per_layer"))
    assert mask(0)[0] == mask(0)[1]  # global: one head set for every layer


# ---------------------------------------------------------------------------
# Stored size on ViT-B; ne bounds; Swin-B per-stage ratio
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ne", [1, 3, 6])
def test_stored_bytes_drop_exactly_the_masked_rows(vit_b, ne):
    backbone = vit_b()
    method = create_method("heart_lora", rank=32, bits=1, ne=ne)
    method.attach(backbone)
    if ne == 1:
        assert method.stored_bytes() == 147_840  # no mask yet: Bi-LoRA's size
    method.nominal_state()
    assert sum(m.count(0) for m in method.mask) == 12 * ne
    assert method.stored_bytes() == 147_840 - 12 * 2 * ne * 64 * 32 // 8


def test_ne_must_be_smaller_than_heads(vit_b):
    backbone = vit_b()
    with pytest.raises(UserError, match="ne=12"):
        create_method("heart_lora", ne=12).check_backbone(backbone)
    with pytest.raises(UserError, match="ne=12"):
        create_method("heart_lora", ne=12).attach(backbone)
    create_method("heart_lora", ne=11).check_backbone(backbone)


def test_swin_b_ratio_quarter_masks_1_2_4_8_per_stage():
    # Swin-B's structure on the meta device: no weights or memory needed to pick heads.
    backbone = meta_backbone("swin_base_patch4_window7_224")
    assert [s.num_heads for s in backbone.sites] == [4] * 2 + [8] * 2 + [16] * 18 + [32] * 2
    for mode in ("global", "per_layer"):
        method = create_method("heart_lora", ratio=0.25, mode=mode)
        method.attach(backbone)
        gen = torch.Generator().manual_seed(3)
        set_raw(method, [torch.randn(2, h, generator=gen) for h in method.heads])
        mask = method.compute_mask()
        for stage, expected in enumerate([1, 2, 4, 8]):
            layers = [s.layer for s in backbone.sites if s.stage == stage]
            assert [mask[la].count(0) for la in layers] == [expected] * len(layers)
            if mode == "global":  # one head set per stage (same head count)
                assert all(mask[la] == mask[layers[0]] for la in layers)
    with pytest.raises(UserError, match="ne=4"):
        create_method("heart_lora", ne=4).check_backbone(backbone)
    with pytest.raises(UserError, match="smaller than the number of heads"):
        create_method("heart_lora", ratio=0.9).check_backbone(backbone)


def test_swin_mask_zeroes_head_rows(tiny):
    backbone = tiny("swin_test")
    method = create_method("heart_lora", ratio=0.5, bits=32)
    method.attach(backbone)
    method.nominal_state()
    for site in backbone.sites:
        ne = site.num_heads // 2
        for target in "qv":
            rows = method.modules[f"layer{site.layer}.{target}"].row_mask
            assert rows.tolist() == [0.0] * (ne * site.head_dim) + [1.0] * (
                (site.num_heads - ne) * site.head_dim)
