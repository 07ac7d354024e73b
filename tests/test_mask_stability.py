"""Mask stability (issue 25, point 3): Jaccard of masked heads across seeds against the exact
chance level, checked by brute-force enumeration and Monte Carlo."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from heartbench.report.stability import (
    expected_jaccard,
    mask_units,
    masked_set,
    mean_pairwise_jaccard,
    stability_rows,
    table_models,
)

REPO = Path(__file__).resolve().parent.parent


def _masks(units: tuple) -> list[frozenset]:
    """Every mask of structure ``units`` as a set of (layer, head): unit u spans w_u layers
    that repeat one choice of k_u of n_u heads."""
    per_unit = []
    layer = 0
    for n, k, w in units:
        layers = range(layer, layer + w)
        layer += w
        per_unit.append([frozenset((la, h) for la in layers for h in heads)
                         for heads in itertools.combinations(range(n), k)])
    return [frozenset().union(*parts) for parts in itertools.product(*per_unit)]


def _brute(units: tuple) -> float:
    masks = _masks(units)
    total = 0.0
    for a, b in itertools.product(masks, repeat=2):
        union = a | b
        total += len(a & b) / len(union) if union else 1.0
    return total / len(masks) ** 2


@pytest.mark.parametrize("n, k", [(n, k) for n in range(1, 9) for k in range(0, n + 1)])
def test_chance_of_one_unit_is_the_enumeration(n: int, k: int) -> None:
    assert expected_jaccard(((n, k, 1),)) == pytest.approx(_brute(((n, k, 1),)), abs=1e-12)


@pytest.mark.parametrize("units", [((4, 1, 2), (6, 2, 1)), ((5, 2, 1), (5, 2, 1), (5, 1, 1)),
                                   ((6, 2, 3),), ((4, 1, 1), (8, 2, 2))])
def test_chance_of_structured_masks_is_the_enumeration(units: tuple) -> None:
    assert expected_jaccard(units) == pytest.approx(_brute(units), abs=1e-12)


def test_chance_of_vit_mini_masks_by_monte_carlo() -> None:
    """ViT-mini, 3 of 12 heads: global (one draw for all 6 layers) and per layer (6 draws)."""
    rng = random.Random(0)
    for units, per_layer in ((((12, 3, 6),), False), (((12, 3, 1),) * 6, True)):
        draws = 20000
        total = total_sq = 0.0
        for _ in range(draws):
            a, b = (_draw(rng, per_layer) for _ in range(2))
            j = len(a & b) / len(a | b)
            total += j
            total_sq += j * j
        mean = total / draws
        se = ((total_sq / draws - mean ** 2) / draws) ** 0.5
        assert abs(expected_jaccard(units) - mean) < 4 * se, (units, mean)
    # 3 of 12 by hand: P(I = 0, 1, 2, 3) = 84, 108, 27, 1 over 220; J = i / (6 - i).
    assert expected_jaccard(((12, 3, 6),)) == pytest.approx((108 / 5 + 27 / 2 + 1) / 220)


def _draw(rng: random.Random, per_layer: bool) -> frozenset:
    """A random ViT-mini mask: 3 of 12 heads, drawn per layer or once for all 6 layers."""
    once = rng.sample(range(12), 3)
    return frozenset((la, h) for la in range(6)
                     for h in (rng.sample(range(12), 3) if per_layer else once))


def _record(mask: list[list[int]], seed: int, task: str = "animals", mode: str = "global",
            label: str = "Heart-LoRA") -> dict:
    return {"status": "done", "method": "heart_lora", "benchmark": "vtab_mini", "task": task,
            "group": "natural", "shots": None, "seed": seed, "label": label,
            "run_id": f"{task}{seed}{mode}{label}", "backbone": {"name": "vit_mini"},
            "method_config": {"ne": 3, "mode": mode}, "grid": {}, "search": {},
            "metrics": {"test_acc": 50.0, "history": []},
            "heart": {"mask": mask, "mode": mode, "score": "taylor", "ne": 3,
                      "steps_before_scoring": 14, "mean_lr_before_scoring": 2.5e-3}}


def _global(heads: list[int], layers: int = 6) -> list[list[int]]:
    return [[0 if h in heads else 1 for h in range(12)] for _ in range(layers)]


def test_rows_read_masks_and_units_from_records() -> None:
    """The issue's animals masks ([5, 6, 7] / [2, 5, 6] / [4, 5, 10]): pairwise 2/4, 1/5, 1/5."""
    records = [_record(_global(h), s) for s, h in enumerate([[5, 6, 7], [2, 5, 6], [4, 5, 10]])]
    assert masked_set(records[0]) == {(la, h) for la in range(6) for h in (5, 6, 7)}
    assert mask_units(records[0]) == ((12, 3, 6),)
    per_layer = _record([[0 if h in (la, la + 1, 11) else 1 for h in range(12)]
                         for la in range(6)], 0, mode="per_layer")
    assert mask_units(per_layer) == ((12, 3, 1),) * 6
    (row,) = stability_rows(records, "vtab_mini")
    assert row.jaccard("animals") == pytest.approx((2 / 4 + 1 / 5 + 1 / 5) / 3)
    assert mean_pairwise_jaccard([masked_set(r) for r in records]) == row.jaccard("animals")
    assert row.chance("animals") == pytest.approx(expected_jaccard(((12, 3, 6),)))
    # A second suite storing the same runs under another label does not double the seeds.
    again = [{**r, "label": "Heart-LoRA (last step)"} for r in records]
    (row,) = stability_rows(records + again, "vtab_mini")
    assert len(row.records["animals"]) == 3


def test_one_configuration_is_one_row_across_its_tasks() -> None:
    """A configuration run on three tasks is one row with three task values (and its Avg.
    their mean), not a row per task; another ne is another row."""
    records = [_record(_global(h), s, task=t) for t in ("animals", "digits8", "counting")
               for s, h in enumerate([[5, 6, 7], [5, 6, 7], [1, 2, 3]])]
    other = [{**_record(_global([0, 1, 2]), s), "method_config": {"ne": 6, "mode": "global"},
              "run_id": f"ne6-{s}"} for s in range(2)]
    rows = stability_rows(records + other, "vtab_mini")
    assert len(rows) == 2
    (row,) = [r for r in rows if len(r.records) == 3]
    assert set(row.records) == {"animals", "digits8", "counting"}
    assert all(len(rs) == 3 for rs in row.records.values())
    assert row.jaccard("digits8") == pytest.approx((1 + 0 + 0) / 3)


def test_table_from_committed_records_matches_sets_by_hand() -> None:
    """The T7 table built from results/ shows, for Heart-LoRA ne = 3 on animals, the mean
    pairwise Jaccard of its seeds' masked sets computed here with plain set operations."""
    from heartbench.report.latex import render
    from heartbench.results import load_records

    records = load_records(REPO / "results").done
    (model,) = table_models(records)
    text = render(model)
    mine: dict[int, set] = {}
    for r in records:
        cfg = r["method_config"]
        if (r["suite"] == "vtab_mini" and r["method"] == "heart_lora" and r["task"] == "animals"
                and cfg.get("ne") == 3 and cfg.get("mode") == "global"
                and cfg.get("score") == "taylor" and cfg.get("bits") == 1):
            mine[r["seed"]] = {(la, h) for la, row in enumerate(r["heart"]["mask"])
                               for h, keep in enumerate(row) if not keep}
    pairs = list(itertools.combinations(mine.values(), 2))
    want = sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)
    line = next(ln for ln in text.splitlines() if ln.startswith("Heart-LoRA ne=3"))
    cells = [c.strip() for c in line.rstrip("\\ ").split("&")]
    animals = [h for h in model.columns].index(next(h for h in model.columns if "animals" in h[0]))
    assert float(cells[1 + len(model.lead) + animals]) == pytest.approx(want, abs=0.005)
    old = any("steps_before_scoring" not in r["heart"] for r in records
              if r["suite"] == "vtab_mini" and r["method"] == "heart_lora")
    assert ("old masks" in line) == old and ("old masks" in model.caption) == old


def test_stability_imports_no_torch() -> None:
    code = ("import sys, heartbench.report.stability as s; from heartbench.results import"
            " load_records; s.table_models(load_records('results').done);"
            " print(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert json.loads(out) is False
