"""Table 1's other methods: full, linear, bitfit, VPT, AdaptFormer, SSF, FacT-TT, Adapter-P,
Compacter. Parameter arithmetic on ViT-B, and on a tiny ViT: only the method trains, zero
update at initialisation, save -> load and merge give identical logits, the reference forms.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F

from heartbench.adapters import NotMergeable, create_method, load_adapter, save_adapter
from heartbench.backbones import Backbone, build_backbone
from heartbench.errors import UserError

METHODS = ["full", "linear", "bitfit", "vpt_shallow", "vpt_deep", "adaptformer", "ssf",
           "fact_tt", "adapter", "compacter"]
MERGEABLE = ["full", "linear", "bitfit", "ssf", "fact_tt"]
# Non-default configurations that take other code paths.
VARIANTS = [
    ("adaptformer", {"input": "norm2", "bias": True, "activation": "gelu"}),
    ("adapter", {"bias": True, "activation": "gelu", "scale": 2.0}),
    ("compacter", {"placement": "pfeiffer", "bias": True, "hidden": 8, "rank": 2}),
    ("vpt_deep", {"length": 3, "dropout": 0.1}),
    ("ssf", {"init": "identity"}),
    ("fact_tt", {"rank": 4, "scale": 10.0}),
]
CASES = [(name, {}) for name in METHODS] + VARIANTS
CASE_IDS = [f"{n}-{'-'.join(map(str, c.values())) or 'default'}" for n, c in CASES]


def tiny(seed: int = 0, name: str = "vit_test") -> Backbone:
    torch.manual_seed(seed)
    backbone = build_backbone(name, 5)
    backbone.model.eval()  # no drop-path or dropout noise
    return backbone


def images(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomise(params, std: float = 0.05, seed: int = 7) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def attached(name: str, config: dict | None = None, seed: int = 3,
             backbone: str = "vit_test") -> tuple[Backbone, object]:
    b = tiny(seed, backbone)
    torch.manual_seed(11)
    method = create_method(name, config or {})
    method.attach(b)
    return b, method


# ---------------------------------------------------------------------------
# Parameter arithmetic on ViT-B/16 (no weights), independent formulas
# ---------------------------------------------------------------------------
D, L, HID, TOKENS, PATCH = 768, 12, 3072, 197, 16
BLOCK_FULL = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * HID + HID) + (HID * D + D)
BLOCK_CHANNELS = D + 3 * D + D + D + HID + D  # norm1, qkv, proj, norm2, fc1, fc2 outputs
VIT_B = {
    "full": 3 * PATCH * PATCH * D + D + D + TOKENS * D + L * BLOCK_FULL + 2 * D,
    "linear": 0,
    "bitfit": L * BLOCK_CHANNELS + D + D,  # every bias: blocks, patch conv, final norm
    "vpt_shallow": 10 * D,
    "vpt_deep": L * 10 * D,
    "adaptformer": L * (D * 8 + 8 * D),
    "ssf": 2 * (L * BLOCK_CHANNELS + D + D),
    "fact_tt": 2 * D * 8 + L * (4 * 8 * 8 + 8 * 32 + 32 * 8),
    "adapter": L * (D * 8 + 8 * D),
    "compacter": L * 2 * 2 * 4 * (D // 4 + 32 // 4) + 4 ** 3,
}
# Table 1's Size column (MB = MiB) and how close the defaults land (MiB), for the methods
# whose defaults are meant to reproduce it (VPT and FacT-TT rows are per-task averages).
PAPER_MIB = {"full": (327, 0.5), "linear": (0, 0), "bitfit": (0.39, 0.005),
             "adaptformer": (0.56, 0.005), "adapter": (0.56, 0.005), "ssf": (0.78, 0.006),
             "compacter": (0.15, 0.005)}


@pytest.fixture(scope="module")
def vit_b_base() -> Backbone:
    torch.manual_seed(0)
    return build_backbone("vit_base_patch16_224", 100)


@pytest.mark.parametrize("name", METHODS)
def test_trainable_params_and_size_on_vit_b(name, vit_b_base) -> None:
    backbone = copy.deepcopy(vit_b_base)
    method = create_method(name)
    method.attach(backbone)
    assert method.num_trainable() == VIT_B[name]
    assert method.stored_bytes() == 4 * VIT_B[name]  # fp32, head excluded
    if name in PAPER_MIB:
        paper, tolerance = PAPER_MIB[name]
        assert method.stored_bytes() / 2**20 == pytest.approx(paper, abs=tolerance)


def test_vpt_and_fact_sizes_follow_their_hyper_parameters(vit_b_base) -> None:
    # The Size column's VPT and FacT-TT rows are per-task averages (docstrings); the
    # arithmetic for other settings:
    for name, config, expected in [("vpt_deep", {"length": 50}, 12 * 50 * D),
                                   ("vpt_shallow", {"length": 100}, 100 * D),
                                   ("fact_tt", {"rank": 16}, 2 * D * 16 + 12 * 12 * 16 ** 2)]:
        backbone = copy.deepcopy(vit_b_base)
        method = create_method(name, config)
        method.attach(backbone)
        assert method.num_trainable() == expected


# ---------------------------------------------------------------------------
# Only the method trains; the rest of the backbone stays frozen and unchanged
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "config"), CASES, ids=CASE_IDS)
def test_only_the_method_trains(name, config) -> None:
    backbone, method = attached(name, config)
    model = backbone.model
    model.train()  # dropout and drop-path on, as in training
    trainable = method.trainable_parameters()
    ours = {id(p) for p in trainable}
    head = {id(p) for p in backbone.head_parameters()}
    assert len(ours) == len(trainable) and not ours & head
    named = dict(model.named_parameters())
    # Every trained tensor is inside the model (checkpoints and .to(device) see it).
    assert ours <= {id(p) for p in named.values()}
    for n, p in named.items():
        assert p.requires_grad == (id(p) in ours | head), n
    before = {n: t.detach().clone() for n, t in [*named.items(), *model.named_buffers()]}

    x, y = images(n=4), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x), y).backward()
    for n, p in named.items():
        if id(p) in ours | head:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    if trainable:
        assert any(p.grad.abs().sum() > 0 for p in trainable)
    torch.optim.AdamW(trainable + backbone.head_parameters(), lr=1e-2).step()
    changed = []
    for n, t in [*named.items(), *model.named_buffers()]:
        if id(t) in ours | head:
            changed.append(not torch.equal(before[n], t))
        else:
            assert torch.equal(before[n], t), n
    assert any(changed)


# ---------------------------------------------------------------------------
# Zero update at initialisation where the method defines one
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "config"), [
    ("adaptformer", {}), ("adaptformer", {"input": "norm2", "bias": True}),
    ("adapter", {}), ("adapter", {"bias": True}), ("fact_tt", {}),
    ("ssf", {"init": "identity"}), ("full", {}), ("linear", {}), ("bitfit", {}),
])
def test_zero_update_at_initialisation(name, config) -> None:
    x = images()
    plain = tiny(3).model(x)
    backbone, _ = attached(name, config)
    assert torch.equal(backbone.model(x), plain)


@pytest.mark.parametrize("name", ["vpt_shallow", "vpt_deep"])
def test_vpt_changes_the_output_from_the_start(name) -> None:
    x = images()
    backbone, _ = attached(name)
    assert not torch.allclose(backbone.model(x), tiny(3).model(x), atol=1e-4)


def test_ssf_official_init_is_not_the_identity() -> None:
    backbone, method = attached("ssf")
    scales = torch.cat([m.scale.detach() for m in method.modules.values()])
    assert 0.01 < scales.std().item() < 0.03 and abs(scales.mean().item() - 1) < 0.005


def test_compacter_starts_near_the_identity() -> None:
    x = images()
    plain = tiny(3).model(x)
    backbone, _ = attached("compacter")
    assert (backbone.model(x) - plain).abs().max() < 1e-4
    backbone, _ = attached("compacter", {"init_range": 0.3})  # the shared A_i do act
    assert (backbone.model(x) - plain).abs().max() > 1e-3


# ---------------------------------------------------------------------------
# save -> load and merge
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "config"), CASES, ids=CASE_IDS)
def test_save_load_gives_identical_logits(name, config, tmp_path) -> None:
    x = images()
    backbone, method = attached(name, config)
    randomise(method.trainable_parameters())
    randomise(backbone.head_parameters(), std=0.5, seed=2)
    logits = backbone.model(x).detach()
    path = tmp_path / "adapter.safetensors"
    written = save_adapter(method, path)
    assert written == method.stored_bytes() == 4 * method.num_trainable()
    with safe_open(str(path), framework="pt") as f:
        payload = [f.get_tensor(k) for k in f.keys() if k.startswith("adapter.")]
    assert written == sum(t.numel() * t.element_size() for t in payload)

    fresh = tiny(3)
    loaded = load_adapter(path, fresh)
    assert loaded.name == name and loaded.config == method.config
    assert torch.equal(fresh.model(x), logits)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(("name", "config"),
                         [c for c in CASES if c[0] in MERGEABLE], ids=lambda v: str(v))
def test_merge_gives_identical_logits_and_the_plain_backbone(name, config) -> None:
    x = images()
    backbone, method = attached(name, config)
    randomise(method.trainable_parameters(), std=0.2)
    logits = backbone.model(x).detach()
    assert type(method).mergeable
    method.merge()
    plain = tiny(3).model
    assert [type(m) for m in backbone.model.modules()] == [type(m) for m in plain.modules()]
    assert ([(n, p.shape) for n, p in backbone.model.named_parameters()]
            == [(n, p.shape) for n, p in plain.named_parameters()])
    assert _hooks(backbone.model) == 0
    torch.testing.assert_close(backbone.model(x), logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(MERGEABLE)))
def test_not_mergeable(name) -> None:
    _, method = attached(name)
    assert not type(method).mergeable
    with pytest.raises(NotMergeable):
        method.merge()


# ---------------------------------------------------------------------------
# The reference forms
# ---------------------------------------------------------------------------
def _attention(attn: nn.Module, h: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
    """timm's attention on a given qkv output (before proj)."""
    B, N, C = h.shape
    qkv = qkv.reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)
    return (weights @ v).transpose(1, 2).reshape(B, N, C)


def test_fact_tt_is_the_official_forward() -> None:
    """A port of PETL-ViT's fact_forward_attn / fact_forward_mlp, block by block."""
    # float64 on both sides: the two forwards sum in different orders (fused vs split qkv,
    # factor products), so they may differ by rounding only. A sum of K products in a
    # different order differs by at most ~K * eps * sum|a_i b_i| (the standard gamma_K bound);
    # K is the longest reduction (fc2's 4C inputs), sum|a_i b_i| is taken as 10x the largest
    # activation (head-room for cancellation), and the error adds up block by block. In
    # float32 that bound is ~1e-4 (1.9e-5 was seen on an AVX-512 machine); in float64 ~1e-12.
    plain = tiny(3).model.double()
    backbone, method = attached("fact_tt", {"rank": 4, "scale": 3.0})
    randomise(method.trainable_parameters(), std=0.3)
    backbone.model.double()
    U, V = backbone.model.fact_tt.U, backbone.model.fact_tt.V
    s, r = 3.0, 4
    x = backbone.model.patch_embed(images().double())
    x = backbone.model._pos_embed(x)
    ref = x.clone()
    for i, (block, base) in enumerate(zip(backbone.model.blocks, plain.blocks)):
        cores = {t: method.modules[f"layer{i}.{t}"].core for t in
                 ("q", "k", "v", "proj", "fc1", "fc2")}
        B, N, C = ref.shape
        h = base.norm1(ref)
        qkv = base.attn.qkv(h)
        qkv = qkv + torch.cat([V(cores[t](U(h))) for t in "qkv"], dim=2) * s
        a = _attention(base.attn, h, qkv)
        ref = ref + base.attn.proj(a) + V(cores["proj"](U(a))) * s
        h = base.norm2(ref)
        h1 = base.mlp.fc1(h) + V(cores["fc1"](U(h)).reshape(B, N, 4, r)).reshape(B, N, 4 * C) * s
        a = base.mlp.act(h1)
        h2 = base.mlp.fc2(a) + V(cores["fc2"](U(a.reshape(B, N, 4, C)).reshape(B, N, 4 * r))) * s
        ref = ref + h2
        x = block(x)
        bound = (i + 1) * 4 * C * torch.finfo(torch.float64).eps * 10 * ref.detach().abs().max().item()
        torch.testing.assert_close(x, ref, rtol=0.0, atol=bound)


def _mlp_branch(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x after the attention half of a plain block, the MLP branch output on it)."""
    x1 = x + block.attn(block.norm1(x))
    return x1, block.mlp(block.norm2(x1))


@pytest.mark.parametrize("where", ["default", "norm2"])
def test_adaptformer_is_parallel_to_the_mlp(where) -> None:
    # default: the Bi-LoRA / official form, fed the residual stream before norm2, scale 0.1
    plain = tiny(3).model
    backbone, method = attached("adaptformer", {} if where == "default" else {"input": where})
    randomise(method.trainable_parameters(), std=0.3)
    x = torch.randn(2, 5, 48)
    for i, (block, base) in enumerate(zip(backbone.model.blocks, plain.blocks)):
        a = method.modules[f"layer{i}"]
        x1, m = _mlp_branch(base, x)
        source = x1 if where == "default" else base.norm2(x1)
        expected = x1 + m + 0.1 * F.linear(F.relu(F.linear(source, a.down.weight)), a.up.weight)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_adapter_p_is_sequential_after_the_mlp() -> None:
    plain = tiny(3).model
    backbone, method = attached("adapter")
    randomise(method.trainable_parameters(), std=0.3)
    x = torch.randn(2, 5, 48)
    for i, (block, base) in enumerate(zip(backbone.model.blocks, plain.blocks)):
        a = method.modules[f"layer{i}"]
        x1, m = _mlp_branch(base, x)
        expected = x1 + m + F.linear(F.relu(F.linear(m, a.down.weight)), a.up.weight)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_compacter_weights_are_kronecker_sums_and_placement() -> None:
    plain = tiny(3).model
    backbone, method = attached("compacter", {"init_range": 0.5})
    rule = backbone.model.compacter_rule.rule
    layer = method.modules["layer0.mlp"].down
    expected = sum(torch.kron(rule[i], layer.left[i] @ layer.right[i]) for i in range(4))
    torch.testing.assert_close(layer.weight(), expected)
    assert layer.left.shape == (4, 12, 1) and layer.right.shape == (4, 1, 8)  # 48 -> 32
    # Houlsby placement: after the attention sub-layer and after the MLP.
    x = torch.randn(2, 5, 48)
    block, base = backbone.model.blocks[0], plain.blocks[0]
    att, mlp = method.modules["layer0.attn"], method.modules["layer0.mlp"]
    h = base.attn(base.norm1(x))
    x1 = x + h + att(h)
    m = base.mlp(base.norm2(x1))
    torch.testing.assert_close(block(x), x1 + m + mlp(m), rtol=1e-5, atol=1e-6)
    # one shared rule for every PHM layer of the model
    assert all(m.down._rule[0] is m.up._rule[0] is backbone.model.compacter_rule
               for m in method.modules.values() if hasattr(m, "down"))


def test_ssf_scales_and_shifts_every_op() -> None:
    backbone, method = attached("ssf")
    names = set(method.modules)
    assert names == {"patch_embed.proj", "norm"} | {
        f"blocks.{i}.{op}" for i in range(2)
        for op in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")}
    qkv = backbone.model.blocks[0].attn.qkv
    h = torch.randn(3, 48)
    expected = F.linear(h, qkv.weight, qkv.bias) * qkv.ssf.scale + qkv.ssf.shift
    torch.testing.assert_close(qkv(h), expected)


def test_vpt_inserts_and_replaces_prompts() -> None:
    for name, deep in [("vpt_shallow", False), ("vpt_deep", True)]:
        backbone, method = attached(name, {"length": 3})
        model, seen = backbone.model, []
        for block in model.blocks:
            block.register_forward_pre_hook(
                lambda m, args, seen=seen: seen.append(args[0].detach()))
        features = model.forward_features(images())
        assert features.shape == (2, 1 + 16, 48)  # prompts removed after the final norm
        first = method.modules["layer0"].tokens
        assert seen[0].shape == (2, 1 + 3 + 16, 48)
        assert torch.equal(seen[0][:, 1:4], first.detach().expand(2, -1, -1))
        second = seen[1][:, 1:4]
        if deep:
            assert torch.equal(second, method.modules["layer1"].tokens.detach().expand(2, -1, -1))
        else:
            assert not torch.allclose(second, first.detach().expand(2, -1, -1))
        bound = math.sqrt(6 / (3 * 8 * 8 + 48))
        assert first.abs().max() <= bound


# ---------------------------------------------------------------------------
# Other backbones and configs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["full", "linear", "bitfit", "ssf", "adaptformer", "adapter",
                                  "compacter"])
def test_swin_support(name, tmp_path) -> None:
    x = images()
    backbone, method = attached(name, backbone="swin_test")
    randomise(method.trainable_parameters())
    logits = backbone.model(x).detach()
    save_adapter(method, tmp_path / "a.safetensors")
    fresh = tiny(3, "swin_test")
    load_adapter(tmp_path / "a.safetensors", fresh)
    assert torch.equal(fresh.model(x), logits)
    if type(method).mergeable:
        method.merge()
        torch.testing.assert_close(backbone.model(x), logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["fact_tt"])  # VPT on Swin: tests/test_vpt_swin.py
def test_vit_only_methods_reject_swin(name) -> None:
    with pytest.raises(UserError, match="ViT"):
        attached(name, backbone="swin_test")


@pytest.mark.parametrize(("name", "config", "message"), [
    ("vpt_deep", {"length": 0}, "length"),
    ("vpt_shallow", {"dropout": 1.0}, "dropout"),
    ("adaptformer", {"input": "mlp"}, "input must be one of block, norm2"),
    ("adapter", {"activation": "tanh"}, "activation"),
    ("compacter", {"hidden": 30}, "multiple of phm_dim"),
    ("compacter", {"placement": "both"}, "placement"),
    ("ssf", {"init": "zeros"}, "init"),
    ("fact_tt", {"rank": 0}, "rank"),
    ("full", {"rate": 1.0}, "unknown key 'rate'"),
    ("full", {"optimizer": "adam"}, "optimizer"),
])
def test_config_errors(name, config, message) -> None:
    with pytest.raises(UserError, match=message):
        create_method(name, config)


# ---------------------------------------------------------------------------
# Defaults as the references: VPT's encoder in eval mode, Full with VPT's SGD
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vpt_shallow", "vpt_deep"])
def test_vpt_trains_with_the_encoder_in_eval_mode(name) -> None:
    # Official PromptedTransformer.train(): the encoder stays in eval mode (no drop-path)
    # while the prompts train; encoder_eval=False keeps the backbone's drop-path.
    assert create_method(name).config.encoder_eval  # the official behaviour by default
    x = images()
    for encoder_eval in (True, False):
        torch.manual_seed(0)
        backbone = build_backbone("vit_test", 5, drop_path_rate=0.5)
        method = create_method(name, {"length": 3, "dropout": 0.5,
                                      "encoder_eval": encoder_eval})
        method.attach(backbone)
        model = backbone.model
        model.eval()
        reference = model(x)
        model.train()
        torch.manual_seed(1)
        first = model(x)
        drops = [m for m in model.modules() if type(m).__name__ == "DropPath"]
        assert drops and all(m.training != encoder_eval for m in drops)
        prompts = [m for m in method.modules.values()]
        assert all(p.training and p.drop.training for p in prompts)  # prompt dropout trains
        # With the encoder in eval mode, only the prompt dropout is random: with it
        # switched off the training-mode output is the eval output.
        for p in prompts:
            p.drop.p = 0.0
        torch.manual_seed(2)
        second = model(x)
        if encoder_eval:
            torch.testing.assert_close(second, reference)
        else:
            assert not torch.allclose(second, reference)
        assert not torch.allclose(first, reference)


def test_full_sgd_is_vpt_sgd_recipe() -> None:
    from heartbench.train import make_optimizer

    backbone, method = attached("full", {"optimizer": "sgd", "lr": 0.005, "weight_decay": 0.001})
    params = method.trainable_parameters()
    train = {"batch_size": 64, "lr": 1e-3, "weight_decay": 1e-4}
    optimizer = make_optimizer(method, params, train)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    # tune_vtab.setup: lr = base lr / 256 * batch size; SOLVER.MOMENTUM 0.9 (the head's bias,
    # not passed here, would have no decay)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.005 * 64 / 256, 0.9,
                                                                      0.001)
    adamw = make_optimizer(create_method("lora"), params, train)
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["lr"] == 1e-3
    own = create_method("full", {"optimizer": "adamw"})
    assert type(make_optimizer(own, params, train)) is torch.optim.AdamW
