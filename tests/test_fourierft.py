"""FourierFT: agreement with PEFT 0.21.2, the fast delta against a dense ifft2, storage, merge."""

from __future__ import annotations

import pytest
import torch

from heartbench.adapters import create_method, load_adapter, save_adapter
from heartbench.adapters.fourierft import FourierDelta, spectrum_locations
from heartbench.backbones import build_backbone, meta_backbone
from heartbench.errors import UserError


def _backbone(seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone("vit_test", 5)
    backbone.model.eval()  # drop_path off
    return backbone


def _images(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _dense_reference(delta: FourierDelta) -> torch.Tensor:
    """PEFT's get_delta_weight, written out: dense spectrum, full ifft2, real part."""
    rows, cols = delta.locations()
    dense = torch.zeros(delta.d_out, delta.d_in, dtype=torch.float64)
    dense[rows, cols] = delta.spectrum.detach().double()
    return torch.fft.ifft2(dense).real * delta.scaling


def test_same_logits_and_gradients_as_peft() -> None:
    peft = pytest.importorskip("peft")
    n, scaling, seed = 300, 20.0, 123
    theirs, ours = _backbone(), _backbone()
    peft.get_peft_model(theirs.model, peft.FourierFTConfig(
        target_modules=["qkv"], n_frequency=n, scaling=scaling, random_loc_seed=seed))
    method = create_method("fourierft", n_frequency=n, scaling=scaling, random_loc_seed=seed,
                           targets="qkv")
    method.attach(ours)
    for site in ours.sites:
        layer = theirs.model.blocks[site.layer].attn.qkv
        delta = method.modules[f"layer{site.layer}.qkv"]
        assert torch.equal(layer.indices["default"], delta.locations())
        with torch.no_grad():
            delta.spectrum.copy_(layer.fourierft_spectrum["default"])
    x = _images()
    weights = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    logits_theirs, logits_ours = theirs.model(x), ours.model(x)
    torch.testing.assert_close(logits_ours, logits_theirs, atol=1e-5, rtol=0)
    (logits_theirs * weights).sum().backward()
    (logits_ours * weights).sum().backward()
    for site in ours.sites:
        grad_theirs = theirs.model.blocks[site.layer].attn.qkv.fourierft_spectrum["default"].grad
        grad_ours = method.modules[f"layer{site.layer}.qkv"].spectrum.grad
        scale = grad_theirs.abs().max().item()
        torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("d_out,d_in", [(12, 8), (9, 7), (8, 10), (7, 6), (144, 48)])
def test_delta_weight_matches_dense_ifft2(d_out: int, d_in: int) -> None:
    torch.manual_seed(0)
    n = min(40, d_out * d_in)
    delta = FourierDelta(d_in, d_out, n, scaling=3.0, seed=7)
    torch.testing.assert_close(delta.delta_weight().double(), _dense_reference(delta),
                               atol=1e-6, rtol=1e-5)
    # Every entry selected (n = d_out * d_in) covers all self-conjugate positions too.
    full = FourierDelta(d_in, d_out, d_out * d_in, scaling=1.0, seed=7)
    torch.testing.assert_close(full.delta_weight().double(), _dense_reference(full),
                               atol=1e-6, rtol=1e-5)


def test_locations_are_peft_randperm_and_shared_by_shape() -> None:
    flat = torch.randperm(48 * 48, generator=torch.Generator().manual_seed(777))[:100]
    locations = spectrum_locations(48, 48, 100, 777)
    assert torch.equal(locations, torch.stack([flat // 48, flat % 48]))
    method = create_method("fourierft", n_frequency=100)
    method.attach(_backbone())
    first = method.modules["layer0.q"].locations()
    for delta in method.modules.values():
        assert torch.equal(delta.locations(), first)


def test_random_init_like_peft_and_zero_init_option() -> None:
    frozen, adapted, zeroed = _backbone(), _backbone(), _backbone()
    create_method("fourierft", n_frequency=100, scaling=10.0).attach(adapted)
    create_method("fourierft", n_frequency=100, zero_init=True).attach(zeroed)
    x = _images()
    with torch.no_grad():
        assert not torch.allclose(adapted.model(x), frozen.model(x), atol=1e-4)
        torch.testing.assert_close(zeroed.model(x), frozen.model(x), atol=0, rtol=0)


def test_save_load_and_merge_give_identical_logits(tmp_path) -> None:
    backbone = _backbone()
    method = create_method("fourierft", n_frequency=200, scaling=10.0, random_loc_seed=5)
    method.attach(backbone)
    x = _images()
    with torch.no_grad():
        logits = backbone.model(x)
    written = save_adapter(method, tmp_path / "a.safetensors")
    assert written == method.stored_bytes() == 2 * 2 * 200 * 4  # 2 layers x (q, v) x n fp32
    assert set(method.stored_state()) == {f"layer{i}.{t}.spectrum" for i in (0, 1) for t in "qv"}
    torch.manual_seed(99)  # the re-attach draws other random coefficients; loading replaces them
    loaded = load_adapter(tmp_path / "a.safetensors", _backbone())
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone.model(x), logits, atol=0, rtol=0)
        method.merge()
        assert isinstance(backbone.sites[0].attn.qkv, torch.nn.Linear)
        torch.testing.assert_close(backbone.model(x), logits, atol=1e-5, rtol=0)


def test_vit_b_default_matches_lora_r8_size() -> None:
    sizes = {}
    for name in ("fourierft", "lora"):
        backbone = meta_backbone("vit_base_patch16_224")
        backbone.model.to_empty(device="cpu")  # real tensors without the cost of init
        method = create_method(name)
        method.attach(backbone)
        sizes[name] = method.stored_bytes()
    assert sizes["fourierft"] == 24 * 12288 * 4 == sizes["lora"]


def test_config_errors() -> None:
    with pytest.raises(UserError, match="n_frequency"):
        create_method("fourierft", n_frequency=0)
    with pytest.raises(UserError, match="targets"):
        create_method("fourierft", targets="qx")
    with pytest.raises(UserError, match="n_frequency 3000 exceeds the 2304 entries"):
        create_method("fourierft", n_frequency=3000).attach(_backbone())
    # On the whole fused qkv (144 x 48) the same value fits.
    create_method("fourierft", n_frequency=3000, targets="qkv").attach(_backbone())
