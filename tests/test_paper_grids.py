"""The paper-scale suites plan the paper's grids (Appendix F.5, Sec. 4) and the official
per-task settings, read from the expanded plans rather than the TOML text."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from heartbench.suite import load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"
S_GRID = {0.01, 0.1, 1.0, 10.0, 100.0}  # Appendix F.5


def values(runs, method, key, label=None):
    """Per task, the set of ``key`` values the plan's runs of ``method`` take."""
    out = defaultdict(set)
    for r in runs:
        if r.method == method and (label is None or r.label == label):
            out[r.task].add(r.method_config[key])
    return out


@pytest.mark.parametrize("suite", ["vtab1k", "ablation_ne", "arbitrary_mask", "per_layer",
                                   "score_variants", "fp32", "swin_vtab1k", "fewshot"])
def test_heart_lora_searches_the_paper_scale_grid(suite):
    runs = load_suite(SUITES / f"{suite}.toml").runs
    scales = values(runs, "heart_lora", "scale")
    assert scales and all(s == S_GRID for s in scales.values())


@pytest.mark.parametrize("suite", ["vtab1k", "fewshot", "per_layer", "fp32"])
def test_heart_lora_has_the_ne0_fallback(suite):
    runs = [r for r in load_suite(SUITES / f"{suite}.toml").runs if r.method == "heart_lora"]
    for task in {r.task for r in runs}:
        assert any(r.method_config["ne"] == 0 for r in runs if r.task == task)


def test_vtab1k_grids_and_official_per_task_values():
    runs = load_suite(SUITES / "vtab1k.toml").runs
    assert all(v == {0, 1, 3, 6} for v in values(runs, "heart_lora", "ne").values())
    assert all(v == S_GRID for v in values(runs, "adaptformer", "scale").values())
    fact = {r.task: (r.method_config["rank"], r.method_config["scale"])
            for r in runs if r.method == "fact_tt"}
    # PETL-ViT FacT/configs/tt/<task>.yaml
    assert fact["svhn"] == (16, 100.0) and fact["clevr_dist"] == (4, 10.0)
    assert fact["dtd"] == (8, 0.01) and fact["resisc45"] == (8, 0.1)
    # Full: VPT's AdamW recipe, its lr x wd grid searched on val200 (VPT's protocol).
    full = [r for r in runs if r.method == "full" and r.task == "dtd"]
    assert len(full) == 1 and full[0].method_config["optimizer"] == "vpt_adamw"
    assert {(lr, wd) for lr in full[0].search["lr"] for wd in full[0].search["weight_decay"]} == {
        (lr, wd) for lr in (0.001, 0.0001, 0.0005, 0.005) for wd in (0.01, 0.001, 0.0001, 0.0)}
    mora = {r.method_config["variant"] for r in runs if r.method == "mora"}
    assert mora == {"rope"}


def test_table4_and_figure2_method_sets():
    swin = {r.method for r in load_suite(SUITES / "swin_vtab1k.toml").runs}
    assert swin == {"full", "linear", "vpt_deep", "bilora", "heart_lora"}
    fewshot = {r.method for r in load_suite(SUITES / "fewshot.toml").runs}
    assert fewshot == {"lora", "bilora", "heart_lora", "vpt_deep", "adapter", "adaptformer"}
