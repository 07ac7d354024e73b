"""Original checkpoints: each written by the test in its publisher's layout, then loaded.

- ViT ``.npz`` in Google's naming (the in21k ViT-B/16 file the paper uses);
- Swin ``.pth`` in Microsoft's layout (``{"model": ...}``, downsample at the end of a stage,
  ``head.``, with the ``relative_position_index``/``attn_mask`` buffers);
- timm's own ``.pth``/``.safetensors`` (tests/test_backbones.py round-trips those).

For each, a file for another architecture, or with a missing or extra tensor, is caught by
``check_weights_file`` (what ``heartbench run`` calls before submitting), naming the tensor
and both shapes. The layouts are written from the publishers' conventions, independently
of the loader (timm's ``_load_weights`` / ``checkpoint_filter_fn``) that reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from heartbench.backbones import build_backbone, check_weights_file
from heartbench.errors import UserError


def timm_state(name: str, seed: int = 123, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_backbone(name, 7, **kwargs).model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def google_npz(state: dict[str, torch.Tensor], heads: int, path: Path, drop: str = "") -> None:
    """A timm ViT state dict written as Google's ViT .npz (big_vision/vit_jax naming)."""
    n = lambda t: t.detach().numpy()  # noqa: E731
    d = state["cls_token"].shape[-1]
    out = {"embedding/kernel": n(state["patch_embed.proj.weight"].permute(2, 3, 1, 0)),
           "embedding/bias": n(state["patch_embed.proj.bias"]), "cls": n(state["cls_token"]),
           "Transformer/posembed_input/pos_embedding": n(state["pos_embed"]),
           "Transformer/encoder_norm/scale": n(state["norm.weight"]),
           "Transformer/encoder_norm/bias": n(state["norm.bias"]),
           "head/kernel": n(state["head.weight"].t()), "head/bias": n(state["head.bias"])}
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    for i in range(depth):
        b, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        qkv_w, qkv_b = state[b + "attn.qkv.weight"], state[b + "attn.qkv.bias"]
        for j, part in enumerate(("query", "key", "value")):
            w = qkv_w[j * d:(j + 1) * d]  # (out, in) -> kernel (in, heads, head_dim)
            out[f"{g}MultiHeadDotProductAttention_1/{part}/kernel"] = n(w.t().reshape(d, heads, -1))
            out[f"{g}MultiHeadDotProductAttention_1/{part}/bias"] = n(
                qkv_b[j * d:(j + 1) * d].reshape(heads, -1))
        out[f"{g}MultiHeadDotProductAttention_1/out/kernel"] = n(
            state[b + "attn.proj.weight"].t().reshape(heads, -1, d))
        out[f"{g}MultiHeadDotProductAttention_1/out/bias"] = n(state[b + "attn.proj.bias"])
        for k, src in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{g}{k}/scale"] = n(state[f"{b}{src}.weight"])
            out[f"{g}{k}/bias"] = n(state[f"{b}{src}.bias"])
        for k, src in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f"{g}MlpBlock_3/{k}/kernel"] = n(state[f"{b}mlp.{src}.weight"].t())
            out[f"{g}MlpBlock_3/{k}/bias"] = n(state[f"{b}mlp.{src}.bias"])
    out.pop(drop, None)
    np.savez(path, **out)


def microsoft_swin(state: dict[str, torch.Tensor], path: Path) -> None:
    """A timm Swin state dict written in Microsoft's Swin-Transformer layout."""
    out = {}
    for key, value in state.items():
        # timm merges patches at the start of stage s >= 1; Microsoft at the end of s - 1.
        key = re.sub(r"layers\.(\d+)\.downsample",
                     lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    # Buffers Microsoft's checkpoints carry (timm recomputes them).
    for key in list(out):
        if key.endswith("attn.relative_position_bias_table"):
            out[key.replace("bias_table", "index")] = torch.zeros(3, dtype=torch.long)
    out["layers.0.blocks.1.attn_mask"] = torch.zeros(1)
    torch.save({"model": out}, path)


def same_backbone(loaded: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> None:
    for key, value in loaded.items():
        if not key.startswith("head"):
            assert torch.equal(value, source[key]), key


# ---------------------------------------------------------------------------
# ViT .npz (Google)
# ---------------------------------------------------------------------------
def test_google_npz_loads_every_tensor(tmp_path):
    source = timm_state("vit_test")
    path = tmp_path / "ViT-test.npz"
    google_npz(source, heads=12, path=path)
    check_weights_file(path, "vit_test", {})
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", 3, weights=str(path))
    same_backbone(backbone.model.state_dict(), source)
    # And the loaded model computes what the source computes (the layout is right).
    torch.manual_seed(123)
    reference = build_backbone("vit_test", 3).model.eval()
    reference.load_state_dict({k: v for k, v in source.items() if not k.startswith("head")},
                              strict=False)
    x = torch.randn(2, 3, 32, 32)
    model = backbone.model.eval()
    assert torch.allclose(model.forward_features(x), reference.forward_features(x), atol=1e-5)


def test_npz_for_a_wider_model_names_tensor_and_shapes(tmp_path):
    path = tmp_path / "wide.npz"
    google_npz(timm_state("vit_test", embed_dim=96), heads=12, path=path)
    with pytest.raises(UserError, match=r"another architecture: the tensor for "
                                        r"'patch_embed.proj.weight' has shape \(96, 3, 8, 8\),"
                                        r" expected \(48, 3, 8, 8\)") as info:
        check_weights_file(path, "vit_test", {})
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_npz_with_more_blocks_than_the_model(tmp_path):
    path = tmp_path / "deep.npz"
    google_npz(timm_state("vit_test", depth=3), heads=12, path=path)
    with pytest.raises(UserError, match="it has 3 blocks, the model 2 .extra tensor "
                                        "'Transformer/encoderblock_2/"):
        check_weights_file(path, "vit_test", {})
    with pytest.raises(UserError, match="it has 3 blocks"):
        build_backbone("vit_test", 3, weights=str(path))


def test_npz_with_fewer_blocks_or_a_missing_tensor(tmp_path):
    path = tmp_path / "shallow.npz"
    google_npz(timm_state("vit_test", depth=1), heads=12, path=path)
    with pytest.raises(UserError, match="has no tensor 'Transformer/encoderblock_1/LayerNorm_0/"
                                        r"scale', which the model's 'blocks.1.norm1.weight' "
                                        r"\(shape \(48,\)\) is loaded from"):
        check_weights_file(path, "vit_test", {})


@pytest.mark.parametrize("drop, target, shape", [
    ("Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias", "blocks.1.mlp.fc1.bias", "(192,)"),
    ("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/key/kernel",
     "blocks.0.attn.qkv.weight", "(144, 48)"),
    ("Transformer/encoder_norm/scale", "norm.weight", "(48,)"),
    ("cls", "cls_token", "(1, 1, 48)"),
])
def test_npz_missing_tensor_is_one_clean_line(tmp_path, drop, target, shape):
    """The file, the tensor it lacks and the model's tensor (and shape) that is loaded from
    it; numpy's own wording ('... is not a file in the archive') is not passed on."""
    path = tmp_path / "holed.npz"
    google_npz(timm_state("vit_test"), heads=12, path=path, drop=drop)
    with pytest.raises(UserError) as info:
        check_weights_file(path, "vit_test", {})
    assert str(info.value) == (
        f"weights file {path} is for another architecture: it has no tensor {drop!r}, which"
        f" the model's {target!r} (shape {shape}) is loaded from")


def test_npz_for_swin_is_refused_before_submission(tmp_path):
    path = tmp_path / "vit.npz"
    google_npz(timm_state("vit_test"), heads=12, path=path)
    with pytest.raises(UserError, match="only supported for ViT, not SwinTransformer"):
        check_weights_file(path, "swin_test", {})


# ---------------------------------------------------------------------------
# Swin .pth (Microsoft)
# ---------------------------------------------------------------------------
def test_microsoft_swin_checkpoint_loads(tmp_path):
    source = timm_state("swin_test")
    path = tmp_path / "swin_microsoft.pth"
    microsoft_swin(source, path)
    assert "layers.0.downsample.norm.weight" in torch.load(path)["model"]
    check_weights_file(path, "swin_test", {})
    torch.manual_seed(0)
    backbone = build_backbone("swin_test", 3, weights=str(path))
    same_backbone(backbone.model.state_dict(), source)


@pytest.mark.parametrize("change, message", [
    ("wider", r"key 'patch_embed.proj.weight' has shape \(32, 3, 4, 4\), expected \(16, 3, 4, 4\)"),
    ("missing", r"missing key 'layers.1.blocks.0.mlp.fc2.bias' \(the model's has shape \(32,\)\)"),
    ("extra", r"unexpected key 'layers.2.blocks.1.attn.proj.bias' \(shape \(64,\), not in"),
])
def test_microsoft_swin_checkpoint_for_another_model(tmp_path, change, message):
    if change == "wider":
        source = timm_state("swin_test", embed_dim=32)
    elif change == "extra":
        source = timm_state("swin_test", depths=(1, 1, 2))
    else:
        source = timm_state("swin_test")
        del source["layers.1.blocks.0.mlp.fc2.bias"]
    path = tmp_path / "swin_microsoft.pth"
    microsoft_swin(source, path)
    with pytest.raises(UserError, match=message) as info:
        check_weights_file(path, "swin_test", {})
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("key, bad, expected", [
    # A table whose length is not a square window: timm cannot resize it.
    ("layers.1.blocks.0.attn.relative_position_bias_table", (50, 4), (49, 4)),
    ("layers.1.blocks.0.attn.relative_position_bias_table", (49,), (49, 4)),
    # Microsoft's patch embedding with a dimension missing: timm cannot resample it.
    ("patch_embed.proj.weight", (16, 3, 4), (16, 3, 4, 4)),
])
def test_microsoft_swin_tensor_that_does_not_convert(tmp_path, key, bad, expected):
    """A tensor timm's checkpoint_filter_fn fails on: one line naming the file, the tensor
    and both shapes (not only timm's exception)."""
    source = timm_state("swin_test")
    source[key] = torch.zeros(bad)
    path = tmp_path / "swin_microsoft.pth"
    microsoft_swin(source, path)
    with pytest.raises(UserError) as info:
        check_weights_file(path, "swin_test", {})
    message = str(info.value)
    assert message.startswith(
        f"weights file {path} is for another architecture: Swin tensor {key!r} of shape {bad}"
        f" does not convert to this model (the model's {key!r} has shape {expected};"), message
    assert "\n" not in message


# ---------------------------------------------------------------------------
# timm .pth / .safetensors: missing and extra tensors name the tensor and its shape
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_missing_or_extra_tensor(tmp_path, suffix):
    def write(state: dict[str, torch.Tensor], path: Path) -> None:
        if suffix == ".pth":
            torch.save(state, path)
        else:
            save_file(state, str(path))

    state = timm_state("vit_test")
    del state["blocks.1.attn.proj.bias"]
    write(state, tmp_path / f"missing{suffix}")
    with pytest.raises(UserError, match=r"missing key 'blocks.1.attn.proj.bias' \(the model's"
                                        r" has shape \(48,\)\)"):
        check_weights_file(tmp_path / f"missing{suffix}", "vit_test", {})
    state = timm_state("vit_test")
    state["blocks.1.attn.extra"] = torch.zeros(5, 2)
    write(state, tmp_path / f"extra{suffix}")
    with pytest.raises(UserError, match=r"unexpected key 'blocks.1.attn.extra' \(shape \(5, 2\)"):
        check_weights_file(tmp_path / f"extra{suffix}", "vit_test", {})
