"""LoRA / Bi-LoRA against PEFT and a hand-written attention block; storage; configs;
save/load/merge for every registered method."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F

from heartbench.adapters import METHODS, create_method, load_adapter, save_adapter
from heartbench.adapters.base import AdaptedLinear
from heartbench.errors import UserError


def randomise(params, std: float = 0.05, seed: int = 1) -> None:
    """Give trainable tensors non-trivial values (B starts at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * std)


# ---------------------------------------------------------------------------
# Whole-qkv LoRA equals PEFT's LoRA
# ---------------------------------------------------------------------------
def test_whole_qkv_lora_matches_peft(tiny):
    from peft import LoraConfig, get_peft_model

    r, alpha = 4, 8
    backbone = tiny()
    reference = copy.deepcopy(backbone.model)
    method = create_method("lora", rank=r, scale=alpha / r, dropout=0.0, targets="qkv")
    method.attach(backbone)
    randomise(method.trainable_parameters())

    peft_model = get_peft_model(
        reference, LoraConfig(target_modules=["qkv"], r=r, lora_alpha=alpha, lora_dropout=0.0))
    peft_model.eval()
    pairs = []
    for site in backbone.sites:
        delta = method.modules[f"layer{site.layer}.qkv"]
        peft_qkv = reference.blocks[site.layer].attn.qkv
        assert peft_qkv.scaling["default"] == alpha / r
        a, b = peft_qkv.lora_A["default"].weight, peft_qkv.lora_B["default"].weight
        with torch.no_grad():
            a.copy_(delta.A)
            b.copy_(delta.B)
        pairs.append(((delta.A, a), (delta.B, b)))

    x = torch.randn(3, 3, 32, 32)
    y = torch.tensor([0, 3, 4])
    ours, theirs = backbone.model(x), peft_model(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, tiny().model(x))  # the update does change the logits
    F.cross_entropy(ours, y).backward()
    F.cross_entropy(theirs, y).backward()
    for (our_a, peft_a), (our_b, peft_b) in pairs:
        torch.testing.assert_close(our_a.grad, peft_a.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(our_b.grad, peft_b.grad, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------
# q,v-only LoRA equals an attention block computed by hand
# ---------------------------------------------------------------------------
def hand_attention(attn: nn.Module, x: torch.Tensor, deltas: dict, scale: float, heads: int
                   ) -> torch.Tensor:
    base = attn.qkv.base
    dim = base.in_features
    w = base.weight.clone()
    w = torch.cat([w[:dim] + scale * deltas["q"].B @ deltas["q"].A,
                   w[dim:2 * dim],
                   w[2 * dim:] + scale * deltas["v"].B @ deltas["v"].A])
    qkv = x @ w.T + base.bias
    batch, tokens, _ = x.shape
    hd = dim // heads

    def split(t):  # (B, N, dim) -> (B, heads, N, hd)
        return t.reshape(batch, tokens, heads, hd).transpose(1, 2)

    q, k, v = split(qkv[..., :dim]), split(qkv[..., dim:2 * dim]), split(qkv[..., 2 * dim:])
    weights = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_qv_lora_matches_hand_written_attention(tiny):
    backbone = tiny()
    method = create_method("lora", rank=3, scale=2.5, dropout=0.0)
    method.attach(backbone)
    randomise(method.trainable_parameters())
    site = backbone.sites[1]
    deltas = {t: method.modules[f"layer1.{t}"] for t in "qv"}
    assert "layer1.k" not in method.modules
    x = torch.randn(2, 17, site.dim)
    ours = site.attn(x)
    ref = hand_attention(site.attn, x, deltas, 2.5, site.num_heads)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    params = [deltas["q"].A, deltas["q"].B, deltas["v"].A, deltas["v"].B]
    g_ours = torch.autograd.grad(ours.square().sum(), params)
    g_ref = torch.autograd.grad(ref.square().sum(), params)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, bits", [("lora", 32), ("bilora", 1), ("heart_lora", 1)])
def test_dropout_acts_on_the_rank_r_bottleneck(tiny, name, bits):
    """With dropout on (training mode), each delta equals s * B(drop(A x)) computed by hand
    with the same RNG state: dropout sits between A and B (Bi-LoRA's Adapter.forward), not
    on the input x (NOAH's / PEFT's place), which draws a different mask."""
    from heartbench.adapters.quant import quantize_ste

    backbone = tiny()
    extra = {"bits": bits} if bits < 32 else {}
    method = create_method(name, rank=4, scale=1.7, dropout=0.5, **extra)
    method.attach(backbone)
    randomise(method.trainable_parameters())
    method.match_mode()
    for delta in method.modules.values():
        delta.train()
        x = torch.randn(2, 5, delta.A.shape[1])
        torch.manual_seed(123)
        got = delta(x)
        a, b = quantize_ste(delta.A, bits).detach(), quantize_ste(delta.B, bits).detach()
        torch.manual_seed(123)
        expected = 1.7 * F.linear(F.dropout(F.linear(x, a), p=0.5, training=True), b)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        torch.manual_seed(123)
        on_input = 1.7 * F.linear(F.linear(F.dropout(x, p=0.5, training=True), a), b)
        assert not torch.allclose(got, on_input, rtol=1e-3, atol=1e-5)
        delta.eval()
        torch.testing.assert_close(delta(x), 1.7 * F.linear(F.linear(x, a), b),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, config", [
    ("lora", {}),
    ("lora", {"targets": "qkv"}),
    ("bilora", {"bits": 32}),
    ("heart_lora", {"bits": 32}),
])
def test_zero_update_at_init(tiny, name, config):
    x = torch.randn(2, 3, 32, 32)
    backbone = tiny()
    frozen = backbone.model(x)
    method = create_method(name, config)
    method.attach(backbone)
    assert all(isinstance(s.attn.qkv, AdaptedLinear) for s in backbone.sites)
    assert torch.equal(backbone.model(x), frozen)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_bilora_b_init_is_truncated_normal(bits):
    from heartbench.adapters.bilora import BiLoRA, BiLoRAConfig

    torch.manual_seed(0)
    delta = BiLoRA(BiLoRAConfig(bits=bits)).make_delta(768, 768)
    assert delta.B.abs().max() <= 0.002
    # Not zeros (a zero matrix has no std), and std near 0.001 shrunk by the truncation.
    assert 0.0007 < delta.B.std() < 0.0009
    fp32 = BiLoRA(BiLoRAConfig(bits=32)).make_delta(768, 768)
    assert torch.count_nonzero(fp32.B) == 0


# ---------------------------------------------------------------------------
# Storage on ViT-B (the paper's numbers)
# ---------------------------------------------------------------------------
def test_lora_r8_qv_trainable_parameters_on_vit_b(vit_b):
    backbone = vit_b()
    method = create_method("lora", rank=8)
    method.attach(backbone)
    assert method.num_trainable() == 294_912 == 12 * 2 * (8 * 768 + 768 * 8)
    trainable = {id(p) for p in backbone.model.parameters() if p.requires_grad}
    expected = {id(p) for p in method.trainable_parameters()} | {
        id(p) for p in backbone.head.parameters()}
    assert trainable == expected


def test_bilora_r32_stored_bytes_on_vit_b(vit_b, tmp_path):
    backbone = vit_b()
    method = create_method("bilora", rank=32, bits=1)
    method.attach(backbone)
    assert method.stored_bytes() == 147_840 == 48 * (768 * 32 // 8 + 8)
    written = save_adapter(method, tmp_path / "a.safetensors")
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        payload = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                      for k in f.keys() if k.startswith("adapter."))
    assert written == payload == 147_840


# ---------------------------------------------------------------------------
# Config errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, values, match", [
    ("lora", {"rank": -1}, "rank"),
    ("lora", {"rank": 0}, "rank"),
    ("bilora", {"rank": -4}, "rank"),
    ("bilora", {"bits": 3}, "bits"),
    ("heart_lora", {"bits": 16}, "bits"),
    ("heart_lora", {"score": "taylr"}, "did you mean 'taylor'"),
    ("heart_lora", {"mode": "perlayer"}, "did you mean 'per_layer'"),
    ("lora", {"rnak": 8}, "did you mean 'rank'"),
    ("heart_lora", {"nee": 3}, "did you mean 'ne'"),
    ("lora", {"rank": "8"}, "'rank' must be int"),
    ("lora", {"rank": 8.0}, "'rank' must be int"),
    ("lora", {"scale": "big"}, "'scale' must be float"),
    ("heart_lora", {"recompute": 1}, "'recompute' must be bool"),
    ("heart_lora", {"ne": -1}, "ne"),
    ("lora", {"targets": "qx"}, "targets"),
])
def test_config_errors_are_user_errors(name, values, match):
    with pytest.raises(UserError, match=match) as info:
        create_method(name, values)
    assert "\n" not in str(info.value)


def test_unknown_method_suggests_closest():
    with pytest.raises(UserError, match="did you mean 'bilora'"):
        create_method("bilorra")


# ---------------------------------------------------------------------------
# save -> load and merge, for every registered method
# ---------------------------------------------------------------------------
# Overrides that make a method's defaults fit vit_test's 48x48 q/v slices; others use defaults.
TINY_CONFIG = {"fourierft": {"n_frequency": 1000}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_save_load_merge(name, tiny, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    backbone = tiny(seed=3)
    torch.manual_seed(4)
    method = create_method(name, TINY_CONFIG.get(name))
    method.attach(backbone)
    backbone.model.eval()  # the new modules start in training mode (dropout)
    randomise(method.trainable_parameters())
    randomise(backbone.head.parameters(), std=0.5, seed=2)
    method.nominal_state()  # Heart-LoRA: applies a mask of its configured size
    if hasattr(method, "mask"):
        assert method.mask is not None and any(0 in m for m in method.mask)
    logits = backbone.model(x).detach()
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, tiny(seed=3).model(x), atol=1e-4)  # update is visible

    path = tmp_path / f"{name}.safetensors"
    written = save_adapter(method, path)
    assert written == method.stored_bytes()
    with safe_open(str(path), framework="pt") as f:
        assert written == sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                              for k in f.keys() if k.startswith("adapter."))

    fresh = tiny(seed=3)
    loaded = load_adapter(path, fresh)
    fresh.model.eval()
    assert loaded.name == name and loaded.config == method.config
    assert torch.equal(fresh.model(x), logits)

    if not type(method).mergeable:
        return
    plain = [type(m) for m in tiny(seed=3).model.modules()]
    for m, model in ((method, backbone.model), (loaded, fresh.model)):
        m.merge()
        assert [type(mod) for mod in model.modules()] == plain
        for site in m.backbone.sites:
            assert type(site.attn.qkv) is nn.Linear
        torch.testing.assert_close(model(x), logits, rtol=0, atol=1e-5)
