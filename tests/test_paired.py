"""Table T8's paired differences (heartbench/report/paired.py) against brute force: the
differences, counts and spread by a loop over units, the Wilcoxon p by enumerating every
sign assignment, and the bookkeeping (reused runs once, the ne = 3 reference, fair rows)."""

from __future__ import annotations

import itertools
import random
import statistics
from pathlib import Path

import pytest
from test_report import rec, write_all

from heartbench.report.build import build
from heartbench.report.paired import compare, families

TASKS = ("mnist", "histology", "counting")
HEART = {"rank": 32, "bits": 1, "mode": "global", "score": "taylor"}


def heart(task: str, seed: int, acc: float, ne: int = 3, **kw) -> dict:
    return rec(task, "Heart-LoRA", "heart_lora", seed, acc, config={**HEART, "ne": ne}, **kw)


def exact_wilcoxon_p(diffs: list[float]) -> float:
    """Two-sided exact signed-rank p: every one of the 2^n sign patterns of the ranks."""
    ranks = {v: i + 1 for i, v in enumerate(sorted(abs(d) for d in diffs))}
    observed = sum(ranks[abs(d)] for d in diffs if d > 0)
    total = sum(ranks.values())
    extreme = min(observed, total - observed)
    hits = 0
    patterns = list(itertools.product((0, 1), repeat=len(diffs)))
    for signs in patterns:
        w = sum(r for r, s in zip(ranks.values(), signs) if s)
        hits += min(w, total - w) <= extreme
    return hits / len(patterns)


def test_differences_counts_and_p_match_a_loop_and_the_exact_test() -> None:
    rng = random.Random(3)
    records, expected = [], []
    for task in TASKS:
        for seed in (0, 1, 2):
            h = round(rng.uniform(40, 80), 2)
            # Distinct non-zero differences (no ties in |d|), except one unit equal.
            d = 0.0 if (task, seed) == ("mnist", 2) else round(rng.uniform(-3, 4), 3)
            records += [heart(task, seed, h), rec(task, "Bi-LoRA", "bilora", seed, h + d,
                                                  config={"rank": 32, "bits": 1})]
            expected.append(d)
    rows = families(records, "vtab_mini")["vit_mini"]
    assert [r.name for r in rows] == ["Heart-LoRA", "Bi-LoRA"]
    c = compare(rows[1], rows[0])
    assert sorted(c.diffs) == pytest.approx(sorted(expected), abs=1e-6)
    assert (c.better, c.worse, c.equal) == (sum(d > 0 for d in expected),
                                           sum(d < 0 for d in expected), 1)
    assert c.mean == pytest.approx(statistics.fmean(expected), abs=1e-6)
    assert c.std == pytest.approx(statistics.stdev(expected), abs=1e-6)
    assert c.tasks == 3
    assert c.p == pytest.approx(exact_wilcoxon_p([d for d in expected if d]), rel=1e-9)


def test_reused_runs_count_once_and_the_reference_is_ne_3() -> None:
    records = []
    for task in TASKS:
        for seed in (0, 1):
            main = heart(task, seed, 60.0 + seed)
            reused = {**main, "suite": "score_window_mini", "label": "Heart-LoRA (last step)"}
            records += [main, reused, heart(task, seed, 50.0 + seed, ne=6),
                        heart(task, seed, 61.0 + seed, ne=0)]
    rows = families(records, "vtab_mini")["vit_mini"]
    assert [r.name for r in rows] == ["Heart-LoRA ne=3", "Heart-LoRA ne=0", "Heart-LoRA ne=6"]
    assert len(rows[0].values) == 6  # 3 tasks x 2 seeds, the reused copies not again
    assert compare(rows[1], rows[0]).diffs == [1.0] * 6
    assert compare(rows[2], rows[0]).diffs == [-10.0] * 6


def test_fair_records_are_their_own_family_one_row_per_method() -> None:
    records = []
    for task in TASKS:
        for seed in (0, 1, 2):
            records.append(heart(task, seed, 60.0, suite="vtab_mini_fair", protocol="val"))
            # Each run chose its own point: one row all the same.
            records.append(rec(task, "LoRA", "lora", seed, 62.0, suite="vtab_mini_fair",
                               protocol="val", grid={"scale": [1.0, 3.0][seed % 2]}))
            records.append(heart(task, seed, 55.0))
    fams = families(records, "vtab_mini")
    assert set(fams) == {"vit_mini", "vit_mini, fair protocol"}
    fair = fams["vit_mini, fair protocol"]
    assert [r.name for r in fair] == ["Heart-LoRA", "LoRA"]
    assert compare(fair[1], fair[0]).diffs == [2.0] * 9


def test_tables_write_table_t8(tmp_path: Path) -> None:
    records = [r for task in TASKS for seed in (0, 1, 2) for r in (
        heart(task, seed, 60.0 + seed),
        rec(task, "LoRA", "lora", seed, 61.0 + 2 * seed, config={"rank": 8}))]
    results = write_all(tmp_path / "results", records)
    out = tmp_path / "paper"
    build(results, out, source="measured", figures=False, pdf="skip")
    text = (out / "table8_vtab_mini.tex").read_text()
    # LoRA - Heart-LoRA per unit: 1, 2, 3 on each task: mean 2, std 0.87, 9 better.
    assert "LoRA & 9 & 3 & 2.00 & 0.87 & 9/0/0 & 0.004" in text  # all 9 better: p = 2 / 2^9


def test_small_p_prints_as_a_bound() -> None:
    from heartbench.report.paired import _p_text

    assert _p_text(0.0004) == "$<$0.001" and _p_text(0.0012) == "0.001" and _p_text(None) == "--"
