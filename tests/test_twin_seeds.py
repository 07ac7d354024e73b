"""Every twin row over the same three seeds and, for VTAB-mini, the same nine tasks (issue 25,
point 2): ablations included."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from heartbench.report.variants import heart_key

REPO = Path(__file__).resolve().parent.parent
TWIN_SUITES = ("vtab_mini", "vtab_mini_others", "score_window_mini", "fewshot_mini", "swin_mini",
               "vtab_mini_fair", "fewshot_mini_fair")
NINE = {"mnist", "animals", "digits8", "histology", "modality", "retina", "orientation",
        "counting", "location"}
# The ablations of the VTAB-mini twin, by Heart-LoRA variant (report.variants.heart_key).
ABLATIONS = ("heart_lora_fp32", "heart_lora_per_layer", "heart_lora_per_layer_weight",
             "heart_lora_per_layer_grad", "front", "heart_lora_global_random")


def _rows(name: str) -> dict[tuple, list]:
    """Runs per row: label and whole config (grid point included), shots apart."""
    from heartbench.suite import load_suite

    rows: dict[tuple, list] = defaultdict(list)
    for run in load_suite(REPO / "suites" / f"{name}.toml").runs:
        rows[(run.label, repr(sorted(run.method_config.items())), run.shots)].append(run)
    return rows


@pytest.mark.parametrize("name", TWIN_SUITES)
def test_every_twin_row_has_three_seeds_on_every_task(name: str) -> None:
    rows = _rows(name)
    tasks = {run.task for runs in rows.values() for run in runs}
    if name == "vtab_mini_fair":  # one task per group, to fit the twin's 4 hours (its header)
        assert tasks == {"digits8", "histology", "counting"}, name
    elif not name.startswith("fewshot"):
        assert tasks == NINE, name
    for key, runs in rows.items():
        by_task = defaultdict(set)
        for run in runs:
            by_task[run.task].add(run.seed)
        assert set(by_task) == tasks, (name, key)
        assert all(seeds == {0, 1, 2} for seeds in by_task.values()), (name, key, dict(by_task))


def test_vtab_mini_has_every_ablation_and_an_ne_sweep() -> None:
    runs = [run for runs in _rows("vtab_mini").values() for run in runs]
    records = [{"method": r.method, "method_config": r.method_config} for r in runs]
    variants = {heart_key(r) for r in records}
    assert set(ABLATIONS) <= variants
    ne = {r.method_config["ne"] for r in runs if heart_key(
        {"method": r.method, "method_config": r.method_config}) == "heart_lora"}
    assert {0, 3} < ne and len(ne) >= 4
