"""Shared fixtures for the adapter and backbone tests (kept small on purpose)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from heartbench.backbones import Backbone, build_backbone


@pytest.fixture(autouse=True)
def _forget_declared_tasks() -> Iterator[None]:
    """A suite's own tasks ([tasks.NAME]) are declared for the process: forget them after each
    test so that one test's tasks never reach another's plan."""
    yield
    from heartbench.data import tasks

    tasks._CUSTOM.clear()


def _tiny(name: str = "vit_test", num_classes: int = 5, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    backbone = build_backbone(name, num_classes)
    backbone.model.eval()
    return backbone


@pytest.fixture
def tiny() -> Callable[..., Backbone]:
    """Factory: a tiny timm backbone in eval mode (no drop-path noise), built from ``seed``."""
    return _tiny


@pytest.fixture(scope="session")
def _vit_b_pristine() -> Backbone:
    # Building ViT-B costs seconds (weight init): do it once per test session.
    torch.manual_seed(0)
    return build_backbone("vit_base_patch16_224", 10)


@pytest.fixture
def vit_b(_vit_b_pristine: Backbone) -> Iterator[Callable[[], Backbone]]:
    """ViT-B (no pretrained weights) to attach q/k/v adapters to; do not merge or train it.

    Attaching only wraps each ``qkv`` Linear, so afterwards the plain Linear is put back
    instead of copying 86M parameters per test.
    """
    backbone = _vit_b_pristine
    yield lambda: backbone
    for site in backbone.sites:
        if hasattr(site.attn.qkv, "base"):
            site.attn.qkv = site.attn.qkv.base
