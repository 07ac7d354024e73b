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
    """Bi-LoRA's 1-bit quantiser written out from PETL-ViT's QLinear.forward: the level
    Phi^-1(.75) * sign of the standardised entry, de-standardised with the plain std, and a
    straight-through gradient through the standardisation."""
    mean, std = w.mean(), w.std()
    n = (w - mean) / (std + 1e-5)
    hard = torch.where(n > 0, Q1, -Q1)
    return (hard + n - n.detach()) * std + mean


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


def reference_stats(backbone, method, x, y, bits: int) -> dict[str, list[torch.Tensor]]:
    """Per layer, (targets x heads) tensors computed by brute force at the current weights:
    taylor = dL/dp_i for a gate p_i on head i's update (Eq. 5 read as a gate gradient);
    weight_l2 / grad_l2 = L2 norms of the latent B's rows and of dL/d(latent B), the latent B
    quantised by the hand-written :func:`one_bit`. Leaves no gradient on the model."""
    heads = backbone.sites[0].num_heads
    names = {id(d): n for n, d in method.modules.items()}
    gates = {n: torch.ones(heads, requires_grad=True) for n in method.modules}
    latent = {n: d.B.detach().clone().requires_grad_() for n, d in method.modules.items()}
    quant = one_bit if bits == 1 else (lambda w: w)

    def gated(self, inp):
        n = names[id(self)]
        out = self.scale * F.linear(F.linear(inp, quant(self.A)), quant(latent[n]))
        out = out.unflatten(-1, (heads, -1)) * gates[n][:, None]
        return out.flatten(-2)

    original = LowRankDelta.forward
    LowRankDelta.forward = gated
    try:
        loss = F.cross_entropy(backbone.model(x), y)
        order = list(method.modules)
        grads = torch.autograd.grad(loss, [gates[n] for n in order] + [latent[n] for n in order])
    finally:
        LowRankDelta.forward = original
    gate_grad = dict(zip(order, grads[:len(order)]))
    latent_grad = dict(zip(order, grads[len(order):]))
    out: dict[str, list[torch.Tensor]] = {"taylor": [], "weight_l2": [], "grad_l2": []}
    for site in backbone.sites:
        rows = [f"layer{site.layer}.{t}" for t in "qv"]
        out["taylor"].append(torch.stack([gate_grad[n] for n in rows]))
        out["weight_l2"].append(torch.stack(
            [latent[n].detach().view(heads, -1).pow(2).sum(1).sqrt() for n in rows]))
        out["grad_l2"].append(torch.stack(
            [latent_grad[n].view(heads, -1).pow(2).sum(1).sqrt() for n in rows]))
    return out


def assert_stats_close(got: dict, expected: dict) -> None:
    for key in ("taylor", "weight_l2", "grad_l2"):
        for g, e in zip(got[key], expected[key]):
            assert e.abs().max() > 0
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6 * float(e.abs().max()))


def off_mask(heads: int, lowest: list[int]) -> list[int]:
    return [0 if h in lowest else 1 for h in range(heads)]


# ---------------------------------------------------------------------------
# Scores: Taylor = dL/dp_i for a gate p_i on head i's update; norms on the latent B
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 32])
def test_scores_equal_gate_gradients(tiny, bits):
    backbone, method = heart(tiny, bits=bits, scale=3.0, ne=2)
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    heads = backbone.sites[0].num_heads
    expected = reference_stats(backbone, method, x, y, bits)

    # The library: the trainer's hooks around one scoring step (warm-up = 1 epoch).
    method.on_train_start(epochs=3, warmup_epochs=1, steps_per_epoch=1)
    method.on_epoch_start(0)
    F.cross_entropy(backbone.model(x), y).backward()
    raw = {k: [t.clone() for t in v] for k, v in method.raw.items()}
    assert method.steps == [1] * len(backbone.sites)
    method.on_epoch_end(0)
    assert_stats_close(raw, expected)

    # Eq. 5 as Algorithm 1 writes it: sum of weight * grad over head i's rows of the B the
    # forward uses. Bits < 32: the latent and forward B differ, and so do their norms.
    if bits == 1:
        for layer, t in ((0, 0), (1, 1)):
            latent = method.modules[f"layer{layer}.{'qv'[t]}"].B.detach().view(heads, -1)
            quantised_norm = one_bit(latent).detach().pow(2).sum(1).sqrt()
            assert not torch.allclose(raw["weight_l2"][layer][t], quantised_norm, rtol=1e-2)

    # Global mode masks the ne heads with the lowest dL/dp summed over q, v and layers.
    lowest = torch.argsort(sum(t.sum(0) for t in expected["taylor"]))[:2].tolist()
    assert method.mask == [off_mask(heads, lowest)] * len(backbone.sites)


@pytest.mark.parametrize("window", ["last_step", "epoch"])
@pytest.mark.parametrize("bits", [1, 32])
def test_scores_read_in_the_last_warm_up_epoch(tiny, window, bits):
    """Two warm-up epochs, weights changing at every step: the scores are those of the last
    step of epoch 1 (``last_step``) or the mean over epoch 1's steps (``epoch``), never epoch
    0's; the mask is set at the end of epoch 1, not before."""
    backbone, method = heart(tiny, bits=bits, ne=3, score_window=window)
    heads = backbone.sites[0].num_heads
    gen = torch.Generator().manual_seed(21)
    batches = {epoch: [(torch.randn(4, 3, 32, 32, generator=gen),
                        torch.randint(0, 5, (4,), generator=gen)) for _ in range(n)]
               for epoch, n in ((0, 2), (1, 3))}
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=2.0)
    method.on_train_start(epochs=5, warmup_epochs=2, steps_per_epoch=3)
    refs = []
    for epoch in (0, 1):
        method.on_epoch_start(epoch)
        for x, y in batches[epoch]:
            if epoch == 1:
                refs.append(reference_stats(backbone, method, x, y, bits))
            optimizer.zero_grad()
            F.cross_entropy(backbone.model(x), y).backward()
            optimizer.step()
        if epoch == 0:
            method.on_epoch_end(epoch)
            assert method.mask is None
    scores = {k: method.scores(k) for k in ("taylor", "weight_l2", "grad_l2")}
    method.on_epoch_end(1)
    if window == "last_step":
        expected = refs[-1]
        assert method.steps == [1] * len(backbone.sites)
    else:
        expected = {k: [sum(r[k][la] for r in refs) / len(refs) for la in range(2)]
                    for k in refs[0]}
        assert method.steps == [3] * len(backbone.sites)
    assert_stats_close(scores, expected)
    # The two windows disagree here (else this test could not tell them apart).
    other = refs[-1] if window == "epoch" else {
        k: [sum(r[k][la] for r in refs) / len(refs) for la in range(2)] for k in refs[0]}
    assert not torch.allclose(other["taylor"][0], expected["taylor"][0], rtol=1e-2)
    lowest = torch.argsort(sum(t.sum(0) for t in expected["taylor"]))[:3].tolist()
    assert method.mask == [off_mask(heads, lowest)] * 2
    assert method.record_extras()["heart"]["score_window"] == window


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
def set_raw(method, taylor: list[torch.Tensor], weight=None, grad=None) -> None:
    gen = torch.Generator().manual_seed(99)
    method.raw["taylor"] = [t.clone() for t in taylor]
    method.raw["weight_l2"] = weight or [torch.rand(t.shape, generator=gen) for t in taylor]
    method.raw["grad_l2"] = grad or [torch.rand(t.shape, generator=gen) for t in taylor]
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


SCORED = ["taylor", "neg_taylor", "abs_taylor", "weight_l2", "grad_l2"]


def expected_masks(raw: dict, score: str, mode: str, ne: int) -> list[list[int]]:
    """The mask each variant must give, from its own raw quantity (written out here)."""
    variant = {"taylor": lambda r: r["taylor"], "neg_taylor": lambda r: -r["taylor"],
               "abs_taylor": lambda r: r["taylor"].abs(), "weight_l2": lambda r: r["weight_l2"],
               "grad_l2": lambda r: r["grad_l2"]}[score]
    layers = len(raw["taylor"])
    per_layer = [variant({k: v[la] for k, v in raw.items()}).sum(0).tolist()
                 for la in range(layers)]
    if mode == "global":
        per_layer = [[sum(col) for col in zip(*per_layer)]] * layers
    return [off_mask(len(values), sorted(range(len(values)), key=values.__getitem__)[:ne])
            for values in per_layer]


@pytest.mark.parametrize("mode", ["global", "per_layer"])
def test_score_variants_pick_lowest(tiny, mode):
    # Independent random Taylor, weight and gradient statistics: every variant's expected
    # mask differs from every other's, so swapping any two variants (e.g. weight_l2 and
    # grad_l2, or abs_taylor read as weight_l2) fails.
    gen = torch.Generator().manual_seed(11)
    raw = {"taylor": [torch.randn(2, 12, generator=gen) for _ in range(2)],
           "weight_l2": [torch.rand(2, 12, generator=gen) for _ in range(2)],
           "grad_l2": [torch.rand(2, 12, generator=gen) for _ in range(2)]}
    expected = {score: expected_masks(raw, score, mode, 3) for score in SCORED}
    assert len({str(m) for m in expected.values()}) == len(SCORED)
    for score in SCORED:
        _, method = heart(tiny, ne=3, score=score, mode=mode)
        set_raw(method, raw["taylor"], raw["weight_l2"], raw["grad_l2"])
        assert method.compute_mask() == expected[score], score


def test_epoch_window_averages_over_steps(tiny):
    # The same sums over 4 steps: "epoch" divides by the step count, the mask follows.
    _, method = heart(tiny, ne=2, score="weight_l2", score_window="epoch")
    gen = torch.Generator().manual_seed(4)
    weight = [torch.rand(2, 12, generator=gen) * 4 for _ in range(2)]
    set_raw(method, [torch.zeros(2, 12)] * 2, weight=weight)
    method.steps = [4, 4]
    for got, w in zip(method.scores("weight_l2"), weight):
        torch.testing.assert_close(got, w / 4)


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
