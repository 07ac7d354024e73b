"""heartbench.testing.check_method: every registered method keeps the interface's promises,
and each promise, broken on purpose, is caught."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from heartbench.adapters import (
    METHODS,
    Delta,
    Method,
    MethodConfig,
    QKVMethod,
    register,
    wrap_linear,
)
from heartbench.testing import MethodContractError, check_method

# Configs that fit the tiny ViT (dim 48): FourierFT's default n_frequency is ViT-B's.
TINY_CONFIGS = {"fourierft": {"n_frequency": 64}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_keeps_the_contract(name: str) -> None:
    result = check_method(name, TINY_CONFIGS.get(name))
    assert result["stored_bytes"] >= 0 and result["load_max_diff"] <= 1e-4


# ---------------------------------------------------------------------------
# Broken on purpose: one promise each
# ---------------------------------------------------------------------------
class _Scale(Delta):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.zeros(d_out, 2))
        self.B = nn.Parameter(torch.randn(2, d_in) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.delta_weight().t()

    def delta_weight(self) -> torch.Tensor:
        return self.A @ self.B


@dataclass
class _Config(MethodConfig):
    targets: str = "qv"


class _Good(QKVMethod):
    config_cls = _Config

    def make_delta(self, d_in: int, d_out: int) -> Delta:
        return _Scale(d_in, d_out)


class _Unfrozen(_Good):
    def attach(self, backbone):  # type: ignore[no-untyped-def]
        super().attach(backbone)
        backbone.sites[0].attn.proj.weight.requires_grad_(True)  # trains, never saved


class _LyingSize(_Good):
    def stored_bytes(self) -> int:
        return super().stored_bytes() // 2


class _Forgetful(_Good):
    def load_stored(self, state):  # type: ignore[no-untyped-def]
        pass  # loads nothing: the round trip gives the untrained outputs


class _BadMerge(_Good):
    def merge(self) -> None:
        assert self.backbone is not None
        for site in self.backbone.sites:  # drops the update instead of folding it in
            site.attn.qkv = site.attn.qkv.base
        self.modules = {}


class _ModeFlip(_Good):
    def on_epoch_end(self, epoch: int) -> None:
        assert self.backbone is not None
        self.backbone.model.eval()


class _Dead(_Good):
    def attach(self, backbone):  # type: ignore[no-untyped-def]
        super().attach(backbone)
        self.modules["unused"] = nn.Linear(2, 2)  # a parameter no output depends on
        wrap_linear(backbone.sites[0].attn, "proj")


@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        METHODS.pop(name, None)


@pytest.mark.parametrize("cls, promise", [
    (_Unfrozen, "only the method's parameters train"),
    (_Dead, "only the method's parameters train"),
    (_LyingSize, "stored size equals what save_adapter writes"),
    (_Forgetful, "save/load round-trips"),
    (_BadMerge, "merge gives the same outputs"),
    (_ModeFlip, "hooks keep the model's train/eval mode"),
])
def test_a_broken_promise_is_caught(cls: type[Method], promise: str,
                                    registered: list[str]) -> None:
    name = f"_contract_{cls.__name__.lower()}"
    registered.append(name)
    broken = register(name)(type(cls.__name__, (cls,), {}))
    with pytest.raises(MethodContractError, match=promise):
        check_method(broken)


def test_the_good_twin_passes(registered: list[str]) -> None:
    registered.append("_contract_good")
    good = register("_contract_good")(type("Good", (_Good,), {}))
    result = check_method(good)
    # The file holds two 2-row factors per q and v slice per layer: counted independently.
    layers, dim = 2, 48
    assert result["stored_bytes"] == layers * 2 * (dim * 2 + 2 * dim) * 4
