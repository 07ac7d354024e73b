"""VPT on Swin against a port of the official Swin prompting (KMnP/vpt,
``vit_prompt/swin_transformer.py``, LOCATION "prepend"): the whole forward, written out here
in the official sequence form on the timm model's weights; then sizes, training mode,
per-image independence, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from heartbench.adapters import create_method, load_adapter, save_adapter
from heartbench.backbones import build_backbone

LENGTH = 3


def swin(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    backbone = build_backbone("swin_test", 5, depths=(2, 2, 2), **kwargs)
    backbone.model.eval()
    return backbone


def attached(name: str, **config):
    backbone = swin()
    torch.manual_seed(4)
    method = create_method(name, {"length": LENGTH, **config})
    method.attach(backbone)
    return backbone, method


def official_attention(attn, seq, mask, length):
    """PromptedWindowAttention.forward: zero bias/mask rows and columns for the prompts."""
    B_, N, C = seq.shape
    heads = attn.num_heads
    qkv = attn.qkv(seq).reshape(B_, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * attn.scale, qkv[1], qkv[2]
    scores = q @ k.transpose(-2, -1)
    n0 = N - length
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(
        n0, n0, -1).permute(2, 0, 1)
    full = torch.zeros(heads, N, N)
    full[:, length:, length:] = bias
    scores = scores + full.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        m = torch.zeros(nw, N, N)
        m[:, length:, length:] = mask
        scores = (scores.view(B_ // nw, nw, heads, N, N) + m.unsqueeze(1).unsqueeze(0)).view(
            -1, heads, N, N)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C)
    return attn.proj(out)


def official_block(block, seq, H, W, length):
    B, _, C = seq.shape
    ws, shift = block.window_size[0], block.shift_size[0]
    shortcut = seq
    h = block.norm1(seq)
    p, t = h[:, :length], h[:, length:].reshape(B, H, W, C)
    if shift:
        t = torch.roll(t, shifts=(-shift, -shift), dims=(1, 2))
    win = t.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
    nw = win.shape[0] // B
    p = p.unsqueeze(0).expand(nw, -1, -1, -1).reshape(-1, length, C)  # official expansion
    out = official_attention(block.attn, torch.cat([p, win], 1), block.attn_mask, length)
    p_out = out[:, :length].view(-1, B, length, C).mean(0)
    t = out[:, length:].view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    t = t.reshape(B, H, W, C)
    if shift:
        t = torch.roll(t, shifts=(shift, shift), dims=(1, 2))
    seq = shortcut + torch.cat([p_out, t.reshape(B, H * W, C)], 1)
    return seq + block.mlp(block.norm2(seq))


def official_forward(model, method, x, deep):
    """PromptedSwinTransformer.forward_features + head, on the timm modules (eval mode)."""
    t = model.patch_embed(x)
    B, H, W, C = t.shape
    prompts = [m.tokens for m in method.modules.values()]
    seq = torch.cat([prompts[0].expand(B, -1, -1), t.reshape(B, H * W, C)], 1)
    j = 0
    for s, stage in enumerate(model.layers):
        if s > 0:  # PromptedPatchMerging: prompts repeated 4 times along C
            p, t = seq[:, :LENGTH], seq[:, LENGTH:].reshape(B, H, W, C)
            t = t.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
            H, W = H // 2, W // 2
            seq = torch.cat([torch.cat([p] * 4, -1), t.reshape(B, H * W, 4 * C)], 1)
            seq = stage.downsample.reduction(stage.downsample.norm(seq))
            C = seq.shape[-1]
        for block in stage.blocks:
            if deep and j > 0:
                seq = torch.cat([prompts[j].expand(B, -1, -1), seq[:, LENGTH:]], 1)
            seq = official_block(block, seq, H, W, LENGTH)
            j += 1
    feats = model.norm(seq).mean(1)  # avgpool over prompts and patches
    return model.head.fc(feats)


@pytest.mark.parametrize("name, deep", [("vpt_shallow", False), ("vpt_deep", True)])
def test_swin_vpt_is_the_official_forward(name, deep):
    backbone, method = attached(name)
    assert any(b.shift_size[0] for s in backbone.model.layers for b in s.blocks)  # SW-MSA too
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = backbone.model(x)
        ref = official_forward(backbone.model, method, x, deep)
        plain = swin().model(x)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-4)  # the prompts change the output


def test_swin_vpt_keeps_images_independent():
    # The official code mixes prompts across a batch (window-major expansion); ours does not.
    backbone, _ = attached("vpt_deep")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        batch = backbone.model(x)
        alone = torch.cat([backbone.model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)


def test_swin_vpt_sizes_and_init():
    dims = [16, 32, 64]  # swin_test's stage widths, two blocks each
    _, shallow = attached("vpt_shallow")
    assert shallow.num_trainable() == LENGTH * dims[0]
    _, deep = attached("vpt_deep")
    assert deep.num_trainable() == LENGTH * 2 * sum(dims)
    assert [m.tokens.shape[1] for m in deep.modules.values()] == [16, 16, 32, 32, 64, 64]
    bound = math.sqrt(6 / (3 * 4 * 4 + dims[0]))  # embed_dim of stage 0, every stage
    assert all(m.tokens.abs().max() <= bound for m in deep.modules.values())
    assert max(m.tokens.abs().max() for m in deep.modules.values()) > 0.8 * bound


def test_swin_vpt_trains_only_prompts_with_the_encoder_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    backbone = swin(drop_path_rate=0.5)
    method = create_method("vpt_deep", {"length": LENGTH})
    method.attach(backbone)
    model = backbone.model
    x = torch.randn(2, 3, 32, 32)
    reference = model(x).detach()
    model.train()
    out = model(x)  # drop-path 0.5 would change this if the encoder trained
    torch.testing.assert_close(out, reference)
    F.cross_entropy(out, torch.tensor([0, 1])).backward()
    trainable = {id(p) for p in method.trainable_parameters()}
    assert all((p.grad is not None) == (id(p) in trainable) for n, p in model.named_parameters()
               if not n.startswith("head"))
    model.eval()
    save_adapter(method, tmp_path / "a.safetensors")
    fresh = swin(seed=0)
    load_adapter(tmp_path / "a.safetensors", fresh)
    torch.testing.assert_close(fresh.model(x), reference, rtol=0, atol=0)
