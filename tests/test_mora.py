"""MoRA: compression/decompression against a slow reference, r_hat, storage, merge."""

from __future__ import annotations

import math

import pytest
import torch

from heartbench.adapters import create_method, load_adapter, save_adapter
from heartbench.adapters.mora import MoRADelta, mora_rank
from heartbench.backbones import build_backbone, meta_backbone
from heartbench.errors import UserError


def _backbone(seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone("vit_test", 5)
    backbone.model.eval()  # drop_path off
    return backbone


def _images(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _randomise(method, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for delta in method.modules.values():
            delta.M.copy_(torch.randn(delta.M.shape, generator=generator) * 0.05)


def _reference(m: torch.Tensor, d_in: int, d_out: int, variant: str) -> torch.Tensor:
    """The dense update, one padded input feature at a time, from the method's definition.

    The input is padded cyclically to blocks * r features (padded feature i is x[i % d_in]).
    Sharing: slot i % r sums its features, output o reads slot o % r of M's output.
    RoPE: block i // r is rotated by angle (block index) * 10000^(-2k/r) on pair (k, k + r/2),
    multiplied by M, and written to padded output rows of the same block; output o reads
    padded output row o % (blocks * r).
    """
    m = m.double()
    r = m.shape[0]
    blocks = math.ceil(d_in / r)
    padded = blocks * r
    weight = torch.zeros(d_out, d_in, dtype=torch.float64)
    out_rows = torch.arange(d_out)
    if variant == "sharing":
        for i in range(padded):
            weight[:, i % d_in] += m[out_rows % r, i % r]
        return weight
    half = r // 2
    for b in range(blocks):
        rotation = torch.zeros(r, r, dtype=torch.float64)
        for j in range(r):
            angle = b * 10000.0 ** (-2 * (j % half) / r)
            rotation[j, j] = math.cos(angle)
            # (rotate_half x)[j] = -x[j + half] for j < half, x[j - half] otherwise
            partner, sign = (j + half, -1.0) if j < half else (j - half, 1.0)
            rotation[j, partner] = sign * math.sin(angle)
        block = m @ rotation
        rows = out_rows % padded
        mine = rows // r == b
        for i in range(b * r, (b + 1) * r):
            weight[mine, i % d_in] += block[rows[mine] % r, i % r]
    return weight


SHAPES = [(768, 768), (48, 48), (48, 144), (16, 16), (10, 20)]


@pytest.mark.parametrize("variant", ["sharing", "rope"])
@pytest.mark.parametrize("d_in,d_out", SHAPES)
def test_delta_weight_is_the_forward_map(variant: str, d_in: int, d_out: int) -> None:
    delta = MoRADelta(d_in, d_out, rank=8, variant=variant)
    with torch.no_grad():
        delta.M.copy_(torch.randn(delta.M.shape, generator=torch.Generator().manual_seed(0)))
        dense = delta.delta_weight()
        # Brute force: the forward pass on the identity's rows gives the columns of dW.
        torch.testing.assert_close(dense, delta(torch.eye(d_in)).T, atol=1e-4, rtol=1e-5)
        reference = _reference(delta.M, d_in, d_out, variant)
        torch.testing.assert_close(dense.double(), reference, atol=1e-4, rtol=1e-5)
        x = torch.randn(3, 5, d_in)
        torch.testing.assert_close(delta(x).double(), x.double() @ reference.T,
                                   atol=1e-3, rtol=1e-5)


def test_r_hat_and_stored_bytes_on_vit_b() -> None:
    assert mora_rank(768, 768, 8) == 111 and mora_rank(768, 768, 8, "rope") == 110
    for variant, r_hat in (("sharing", 111), ("rope", 110)):
        backbone = meta_backbone("vit_base_patch16_224")
        backbone.model.to_empty(device="cpu")  # real tensors without the cost of init
        method = create_method("mora", variant=variant)
        method.attach(backbone)
        assert len(method.modules) == 24
        assert all(d.M.shape == (r_hat, r_hat) for d in method.modules.values())
        assert method.stored_bytes() == 24 * r_hat**2 * 4


def test_zero_init_gives_the_frozen_backbone() -> None:
    frozen = _backbone()
    x = _images()
    for variant in ("sharing", "rope"):
        adapted = _backbone()
        create_method("mora", variant=variant).attach(adapted)
        with torch.no_grad():
            torch.testing.assert_close(adapted.model(x), frozen.model(x), atol=0, rtol=0)


@pytest.mark.parametrize("variant,targets", [("sharing", "qv"), ("rope", "qv"),
                                             ("sharing", "qkv")])
def test_save_load_and_merge_give_identical_logits(tmp_path, variant: str, targets: str) -> None:
    backbone = _backbone()
    method = create_method("mora", variant=variant, targets=targets)
    method.attach(backbone)
    _randomise(method)
    x = _images()
    with torch.no_grad():
        logits = backbone.model(x)
        assert not torch.allclose(logits, _backbone().model(x), atol=1e-4)
    path = tmp_path / "m.safetensors"
    assert save_adapter(method, path) == method.stored_bytes()
    loaded = load_adapter(path, _backbone())
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone.model(x), logits, atol=0, rtol=0)
        method.merge()
        assert isinstance(backbone.sites[0].attn.qkv, torch.nn.Linear)
        torch.testing.assert_close(backbone.model(x), logits, atol=1e-5, rtol=0)


def test_gradient_reaches_m_from_zero() -> None:
    backbone = _backbone()
    method = create_method("mora", variant="rope")
    method.attach(backbone)
    backbone.model(_images()).sum().backward()
    assert all(d.M.grad is not None and d.M.grad.abs().sum() > 0 for d in method.modules.values())


def test_config_errors() -> None:
    with pytest.raises(UserError, match="rank"):
        create_method("mora", rank=0)
    with pytest.raises(UserError, match="variant"):
        create_method("mora", variant="rotary")
    with pytest.raises(UserError, match="targets"):
        create_method("mora", targets="")


def test_defaults_are_the_rope_variant_with_lora_dropout() -> None:
    # MoRA README: type 6 (RoPE) for small ranks; the paper: LoRA's hyper-parameters (0.1).
    method = create_method("mora")
    assert (method.config.variant, method.config.dropout) == ("rope", 0.1)
    delta = method.make_delta(768, 768)
    assert delta.r_hat == 110 and delta.drop.p == 0.1
