"""The paper's ViT-B/16 representation layer (``pre_logits`` = Linear + tanh on the class
token after the final norm, as timm 0.4.x builds ``vit_base_patch16_224_in21k``), loaded
from an original Google .npz; an .npz tensor that would go unused is refused.

The forward is checked against a numpy forward written here from the .npz arrays alone
(Google's names and layouts), not from timm's modules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_checkpoints import google_npz, timm_state

from heartbench.backbones import build_backbone, check_weights_file
from heartbench.errors import UserError

HEADS = 12  # vit_test: 48 wide, 12 heads, patch 8 on 32 px, 2 blocks


def write_npz(path: Path, seed: int = 0, pre_logits: bool = True, **extra: np.ndarray) -> Path:
    """vit_test's random weights in Google's layout, plus ``pre_logits/{kernel,bias}``."""
    google_npz(timm_state("vit_test", seed=123), heads=HEADS, path=path)
    with np.load(path) as archive:
        arrays = dict(archive)
    if pre_logits:
        rng = np.random.default_rng(seed)
        arrays["pre_logits/kernel"] = rng.normal(0, 0.3, (48, 48)).astype(np.float32)
        arrays["pre_logits/bias"] = rng.normal(0, 0.3, 48).astype(np.float32)
    np.savez(path, **arrays, **extra)
    return path


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * scale + bias


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def numpy_forward(w: dict[str, np.ndarray], images: np.ndarray, head_w: np.ndarray,
                  head_b: np.ndarray) -> np.ndarray:
    """Google's ViT on NCHW images, from the .npz arrays, then the given head."""
    x = images.astype(np.float64).transpose(0, 2, 3, 1)  # NHWC
    kernel = w["embedding/kernel"]  # (ph, pw, in, dim)
    p = kernel.shape[0]
    n, h, wd, c = x.shape
    patches = x.reshape(n, h // p, p, wd // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = patches.reshape(n, -1, p * p * c) @ kernel.reshape(p * p * c, -1)
    tokens = tokens + w["embedding/bias"]
    cls = np.broadcast_to(w["cls"], (n, 1, tokens.shape[-1]))
    x = np.concatenate([cls, tokens], 1) + w["Transformer/posembed_input/pos_embedding"]
    depth = len({k.split("/")[1] for k in w if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        g = f"Transformer/encoderblock_{i}/"
        a = g + "MultiHeadDotProductAttention_1/"
        y = layer_norm(x, w[g + "LayerNorm_0/scale"], w[g + "LayerNorm_0/bias"])
        q, k, v = (np.einsum("ntd,dhe->nhte", y, w[a + f"{part}/kernel"])
                   + w[a + f"{part}/bias"][None, :, None, :] for part in ("query", "key", "value"))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        x = x + np.einsum("nhte,hed->ntd", attn @ v, w[a + "out/kernel"]) + w[a + "out/bias"]
        y = layer_norm(x, w[g + "LayerNorm_2/scale"], w[g + "LayerNorm_2/bias"])
        m = g + "MlpBlock_3/"
        y = gelu(y @ w[m + "Dense_0/kernel"] + w[m + "Dense_0/bias"])
        x = x + y @ w[m + "Dense_1/kernel"] + w[m + "Dense_1/bias"]
    x = layer_norm(x, w["Transformer/encoder_norm/scale"], w["Transformer/encoder_norm/bias"])
    rep = np.tanh(x[:, 0] @ w["pre_logits/kernel"] + w["pre_logits/bias"])
    return rep @ head_w.T + head_b


def logits(path: Path, images: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """heartbench's logits (eval mode) and the numpy forward's, with the model's fresh head."""
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", 5, weights=str(path), pre_logits=True)
    model = backbone.model.eval()
    with torch.no_grad():
        ours = model(images)
    with np.load(path) as archive:
        arrays = {k: archive[k].astype(np.float64) for k in archive.files}
    head = backbone.head
    ref = numpy_forward(arrays, images.numpy(), head.weight.detach().double().numpy(),
                        head.bias.detach().double().numpy())
    return ours, ref


def test_forward_equals_numpy_forward_from_the_npz(tmp_path: Path) -> None:
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours, ref = logits(write_npz(tmp_path / "a.npz", seed=0), images)
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-4, atol=1e-5)

    # Only the pre_logits tensors differ: the output changes, and still equals numpy's.
    other, ref_other = logits(write_npz(tmp_path / "b.npz", seed=1), images)
    np.testing.assert_allclose(other.double().numpy(), ref_other, rtol=1e-4, atol=1e-5)
    assert (other - ours).abs().max() > 1e-2


def test_pre_logits_is_frozen_and_recorded(tmp_path: Path) -> None:
    backbone = build_backbone("vit_test", 5, weights=str(write_npz(tmp_path / "a.npz")),
                              pre_logits=True)
    layer = backbone.model.pre_logits.fc
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert backbone.describe()["pre_logits"] is True
    assert "pre_logits" not in build_backbone("vit_test", 5).describe()


@pytest.mark.parametrize("extra, pre_logits, name", [
    ({}, False, "pre_logits/"),  # the paper's .npz on a backbone without the layer
    ({"Transformer/encoderblock_0/Extra_0/kernel": np.zeros((2, 2), np.float32)}, True,
     "Transformer/encoderblock_0/Extra_0/kernel"),
])
def test_npz_tensor_that_would_go_unused_is_refused(tmp_path: Path, extra: dict,
                                                    pre_logits: bool, name: str) -> None:
    path = write_npz(tmp_path / "w.npz", **extra)
    for call in (lambda: check_weights_file(path, "vit_test", {}, pre_logits=pre_logits),
                 lambda: build_backbone("vit_test", 3, weights=str(path), pre_logits=pre_logits)):
        with pytest.raises(UserError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and str(path) in message and f"'{name}" in message


def test_npz_without_pre_logits_for_a_backbone_with_it(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "w.npz", pre_logits=False)
    with pytest.raises(UserError, match="no tensor 'pre_logits/kernel'") as info:
        check_weights_file(path, "vit_test", {}, pre_logits=True)
    assert "\n" not in str(info.value)
    check_weights_file(path, "vit_test", {})  # the head alone may go unused


def test_suite_pre_logits_enters_identity_only_when_present(tmp_path: Path) -> None:
    from heartbench.suite import load_suite

    def suite(extra: str) -> str:
        text = ('[suite]\nbenchmark = "synth"\ndata_root = "d"\ntasks = ["colors"]\n'
                f'[backbone]\nname = "vit_test"\n{extra}\n[[methods]]\nname = "linear"\n')
        path = tmp_path / f"s{len(extra)}.toml"
        path.write_text(text)
        return load_suite(path).runs[0]

    plain, explicit_off, on = suite(""), suite("pre_logits = false"), suite("pre_logits = true")
    assert "pre_logits" not in plain.backbone and plain.run_id == explicit_off.run_id
    assert on.backbone["pre_logits"] is True and on.run_id != plain.run_id


def test_packed_runs_with_pre_logits_equal_each_run_alone(tmp_path: Path) -> None:
    """The representation layer is a frozen tensor the runs of a pack share (heartbench.pack):
    each packed run still equals the run alone."""
    from safetensors.torch import save_file
    from test_pack import assert_same_run, specs_for

    from heartbench import pack
    from heartbench import train as tr
    from heartbench.data.synth import write_synth

    write_synth(tmp_path / "synth", tasks=["colors"])
    torch.manual_seed(123)
    model = build_backbone("vit_test", 4, pre_logits=True).model
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    # specs_for writes `weights = "<weights>"`: close the string, add the key, comment the rest.
    _, specs = specs_for(tmp_path, tmp_path / "synth", "lora", "rank = 4",
                         weights=f'{weights}"\npre_logits = true\n#"')
    assert all(s.backbone["pre_logits"] for s in specs)
    alone = [tr.train_phase(s, s.method_config, "train", "test", None) for s in specs]
    assert all(r["backbone"].model.pre_logits.fc.weight.equal(model.pre_logits.fc.weight)
               for r in alone)
    for result, run in zip(alone, pack.train_pack(specs, [None] * len(specs))):
        assert_same_run(result, run)
