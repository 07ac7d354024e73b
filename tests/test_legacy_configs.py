"""Stored configs from before a behaviour key existed are completed with the value that
reproduces the old behaviour (``MethodConfig.legacy``), never with the new default; the
quantiser's two de-standardisations against their formulas. No training."""

from __future__ import annotations

from statistics import NormalDist

import pytest
import torch
from torch.nn import functional as F

from heartbench.adapters import create_method, load_adapter, save_adapter
from heartbench.adapters.base import METHODS, complete_stored_config, get_method_class
from heartbench.adapters.quant import pack_matrix, quantize_ste, unpack_matrix
from heartbench.rerun import spec_from_record
from heartbench.suite import LEGACY_FEWSHOT_TRAIN

Q1 = NormalDist().inv_cdf(0.75)  # the 1-bit level
get_method_class("lora")  # fills METHODS

# What the code did before each key was added (git history: 9de0e31, 70f4211, bdf70cf),
# written out here rather than read from the classes under test.
OLD_BEHAVIOUR = {
    "bilora": {"destandardise": "std_plus_eps"},
    "heart_lora": {"destandardise": "std_plus_eps", "score_window": "epoch",
                   "l2_source": "forward"},
    "vpt_shallow": {"encoder_eval": False, "optimizer": "adamw"},
    "vpt_deep": {"encoder_eval": False, "optimizer": "adamw"},
    "full": {"optimizer": "adamw"},
    "linear": {"optimizer": "adamw"},
}


def test_legacy_tables_are_the_old_behaviour():
    declared = {name: cls.config_cls.legacy for name, cls in METHODS.items()
                if cls.config_cls.legacy}
    assert declared == OLD_BEHAVIOUR


@pytest.mark.parametrize("name", sorted(METHODS))
def test_missing_legacy_key_completed_current_config_unchanged(name):
    current = get_method_class(name).config_cls().to_dict()
    assert complete_stored_config(name, current) == current
    for key, old in OLD_BEHAVIOUR.get(name, {}).items():
        assert current[key] != old, f"{name}.{key}: legacy value equals the new default"
        stored = {k: v for k, v in current.items() if k != key}
        completed = complete_stored_config(name, stored)
        assert completed == {**current, key: old}
        assert stored == {k: v for k, v in current.items() if k != key}  # not mutated
        assert getattr(create_method(name, completed).config, key) == old


def record(method: str, config: dict, shots: int | None = None, train: dict | None = None
           ) -> dict:
    return {"suite": "s", "benchmark": "fewshot_mini" if shots else "vtab_mini",
            "data_root": "d", "task": "t", "group": None, "num_classes": 3, "shots": shots,
            "method": method, "label": method, "method_config": config, "grid": {},
            "search": {}, "backbone": {}, "train": train or {"lr": 1e-3}, "seed": 0,
            "eval_protocol": "last", "run_id": "r"}


def test_spec_from_record_completes_method_and_fewshot_train():
    old = {"rank": 32, "scale": 10.0, "dropout": 0.1, "targets": "qv", "bits": 1}
    spec = spec_from_record(record("bilora", old))
    assert spec.method_config == {**old, "destandardise": "std_plus_eps"}
    # VTAB: no few-shot keys added; the schedule stepping of records from before its key
    legacy = {"schedule_step": "next_epoch", "warmup_per_step": False, "precision": "fp32"}
    assert spec.train == {"lr": 1e-3, **legacy}
    new = {**old, "destandardise": "std"}
    assert spec_from_record(record("bilora", new)).method_config == new

    # Few-shot: the pre-NOAH recipe (ColorJitter 0.4, no erasing/Mixup/CutMix/smoothing).
    spec = spec_from_record(record("lora", {"rank": 8}, shots=2, train={"lr": 5e-3}))
    assert spec.train == {"lr": 5e-3, "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0,
                          "reprob": 0.0, "color_jitter": 0.4, **legacy}
    assert LEGACY_FEWSHOT_TRAIN == {k: v for k, v in spec.train.items()
                                    if k != "lr" and k not in legacy}
    recipe = {"lr": 5e-3, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "reprob": 0.25,
              "color_jitter": 0.0}
    assert spec_from_record(record("lora", {}, shots=2, train=recipe)).train == {
        **recipe, **legacy}


# ---------------------------------------------------------------------------
# Quantiser: legacy q * (std + 1e-5) + mean, default q * std + mean
# ---------------------------------------------------------------------------
def one_bit_levels(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, std = w.mean(), w.std()
    q = torch.where((w - mean) / (std + 1e-5) > 0, Q1, -Q1).to(w.dtype)
    return q, mean, std


def test_quantiser_legacy_and_reference_formulas():
    gen = torch.Generator().manual_seed(0)
    # A small std makes the 1e-5 visible (about 7e-6 against entries of about 1e-4).
    w = torch.randn(16, 8, generator=gen, dtype=torch.float64) * 1e-4 + 3e-5
    q, mean, std = one_bit_levels(w)
    old, ref = q * (std + 1e-5) + mean, q * std + mean
    assert (old - ref).abs().max() > 1e-6
    torch.testing.assert_close(quantize_ste(w, 1), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(quantize_ste(w, 1, "std"), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(quantize_ste(w, 1, "std_plus_eps"), old, rtol=0, atol=1e-10)

    # The library's levels solve the median fixed point numerically (~1e-8 from Phi^-1(.75)),
    # far below the 1e-5 term (differences of ~7e-6 here).
    # Storage: codes + fp32 (mean, std), read back with the same formula.
    stored = pack_matrix(w, 1)
    mean32, std32 = stored["stats"]
    for mode, expected in (("std", q.float() * std32 + mean32),
                           ("std_plus_eps", q.float() * (std32 + 1e-5) + mean32)):
        torch.testing.assert_close(unpack_matrix(stored, 1, (16, 8), mode), expected,
                                   rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("mode", ["std", "std_plus_eps"])
def test_bilora_delta_follows_its_destandardise(mode):
    method = create_method("bilora", {"rank": 4, "destandardise": mode})
    delta = method.make_delta(12, 12)
    a, b = delta.effective()
    for latent, used in ((delta.A, a), (delta.B, b)):
        q, mean, std = one_bit_levels(latent.detach())
        expected = q * (std + 1e-5 if mode == "std_plus_eps" else std) + mean
        torch.testing.assert_close(used.detach(), expected, rtol=1e-6, atol=1e-9)


def test_load_adapter_completes_an_old_adapter(tiny, tmp_path):
    """An adapter file written before ``destandardise`` reads back with the old formula."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    method = create_method("bilora", {"rank": 4, "destandardise": "std_plus_eps"})
    method.attach(tiny())
    path = tmp_path / "a.safetensors"
    save_adapter(method, path)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["heartbench.config"])
    del config["destandardise"]
    save_file(tensors, str(path), {**meta, "heartbench.config": json.dumps(config)})
    loaded = load_adapter(path, tiny())
    assert loaded.config.destandardise == "std_plus_eps"
    for name, delta in method.modules.items():
        for got, want in zip(loaded.modules[name].effective(), delta.effective()):
            torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------
# Heart-LoRA's legacy L2 source: norms of the forward (quantised) B and of its gradient
# ---------------------------------------------------------------------------
def test_heart_forward_l2_source(tiny):
    backbone = tiny()
    torch.manual_seed(5)
    method = create_method("heart_lora", {"rank": 4, "dropout": 0.0, "ne": 1,
                                          "l2_source": "forward", "score_window": "epoch"})
    method.attach(backbone)
    backbone.model.eval()
    heads = backbone.sites[0].num_heads
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for delta in method.modules.values():
            delta.B.copy_(torch.randn(delta.B.shape, generator=gen) * 0.05)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])

    # Independent: feed each delta its forward A and B as leaves, take dL/d(forward B).
    forward_b = {n: d.effective()[1].detach().clone().requires_grad_()
                 for n, d in method.modules.items()}
    for n, d in method.modules.items():
        d.loaded = {"A": d.effective()[0].detach(), "B": forward_b[n]}
    loss = F.cross_entropy(backbone.model(x), y)
    grads = dict(zip(forward_b, torch.autograd.grad(loss, list(forward_b.values()))))
    for d in method.modules.values():
        d.loaded = None

    method.on_train_start(epochs=3, warmup_epochs=1, steps_per_epoch=1)
    method.on_epoch_start(0)
    F.cross_entropy(backbone.model(x), y).backward()
    for site in backbone.sites:
        for t, target in enumerate("qv"):
            name = f"layer{site.layer}.{target}"
            weight = forward_b[name].detach().view(heads, -1).pow(2).sum(1).sqrt()
            grad = grads[name].view(heads, -1).pow(2).sum(1).sqrt()
            torch.testing.assert_close(method.raw["weight_l2"][site.layer][t], weight)
            torch.testing.assert_close(method.raw["grad_l2"][site.layer][t], grad)
            latent = method.modules[name].B.detach().view(heads, -1).pow(2).sum(1).sqrt()
            assert not torch.allclose(weight, latent, rtol=1e-2)
