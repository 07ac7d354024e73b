"""Backbones: local weight files round trip, wrong files are one-line UserErrors, freezing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from heartbench.adapters import create_method
from heartbench.backbones import build_backbone, check_weights_file
from heartbench.errors import UserError


def checkpoint(name: str = "vit_test", num_classes: int = 7, **kwargs) -> dict[str, torch.Tensor]:
    """A state dict of a randomly initialised model, its head set to a recognisable value."""
    torch.manual_seed(123)
    model = build_backbone(name, num_classes, **kwargs).model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    head = [k for k in state if k.startswith("head.")]
    assert head
    for k in head:
        state[k].fill_(7.0)
    return state


@pytest.mark.parametrize("name", ["vit_test", "swin_test"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_round_trip(tmp_path, name, suffix):
    state = checkpoint(name, num_classes=7)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(0)  # a different init than the checkpoint's
    backbone = build_backbone(name, 3, weights=str(path))
    assert backbone.weights == str(path)
    loaded = backbone.model.state_dict()
    head_keys = {k for k in loaded if k.startswith("head.")}
    for key, value in loaded.items():
        if key not in head_keys:
            assert torch.equal(value, state[key]), key
    # The head is fresh: the requested class count, not the checkpoint's (7.0 everywhere).
    head = backbone.head
    assert isinstance(head, nn.Linear) and head.out_features == 3
    assert not (head.weight == 7.0).any() and not (head.bias == 7.0).any()


def first_mismatch(own: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> str:
    for key, value in own.items():
        if not key.startswith("head.") and (key not in other or other[key].shape != value.shape):
            return key
    raise AssertionError("no mismatch")


@pytest.mark.parametrize("other, kwargs", [
    ("swin_test", {}),  # another family: first ViT key missing
    ("vit_test", {"embed_dim": 24}),  # same keys, other shapes
])
def test_weights_for_another_architecture(tmp_path, other, kwargs):
    state = checkpoint(other, **kwargs)
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    own = build_backbone("vit_test", 3).model.state_dict()
    key = first_mismatch(own, state)
    with pytest.raises(UserError, match=f"another architecture.*{key!r}") as info:
        build_backbone("vit_test", 3, weights=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match=f"another architecture.*{key!r}"):
        check_weights_file(path, "vit_test", {})


def test_weights_with_extra_block_name_the_unexpected_key(tmp_path):
    state = checkpoint("vit_test", depth=3)
    path = tmp_path / "deeper.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="unexpected key 'blocks.2."):
        build_backbone("vit_test", 3, weights=str(path))


@pytest.mark.parametrize("filename, content", [
    ("notes.pth", b"this is not a checkpoint"),
    ("garbage.safetensors", b"\x00\x01\x02 not safetensors"),
    ("list.pth", None),  # a valid torch file that holds a list, not a state dict
])
def test_non_checkpoint_file(tmp_path, filename, content):
    path = tmp_path / filename
    if content is None:
        torch.save([torch.zeros(2), torch.ones(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match="checkpoint") as info:
        build_backbone("vit_test", 3, weights=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_missing_weights_file(tmp_path, suffix):
    path = tmp_path / f"absent{suffix}"
    with pytest.raises(UserError, match="does not exist"):
        build_backbone("vit_test", 3, weights=str(path))


def test_unknown_backbone_name():
    with pytest.raises(UserError, match="did you mean 'vit_test'"):
        build_backbone("vit_tset", 3)


@pytest.mark.parametrize("name", ["vit_test", "swin_test"])
def test_only_the_head_trains_before_attach(name):
    backbone = build_backbone(name, 4)
    head = {id(p) for p in backbone.model.get_classifier().parameters()}
    assert len(head) == 2
    trainable = {id(p) for p in backbone.model.parameters() if p.requires_grad}
    assert trainable == head
    assert backbone.head.out_features == 4
    frozen = sum(p.numel() for p in backbone.model.parameters() if not p.requires_grad)
    assert frozen > 0
    # After attaching, exactly the adapter's tensors are added.
    method = create_method("lora", rank=2)
    method.attach(backbone)
    trainable = {id(p) for p in backbone.model.parameters() if p.requires_grad}
    assert trainable == head | {id(p) for p in method.trainable_parameters()}
    assert len(method.trainable_parameters()) == 2 * 2 * len(backbone.sites)
