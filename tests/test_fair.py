"""Budgets made visible and the fair protocol: ``run --dry-run`` states each run's search,
every measured row states its budget, the fair suites give every method the same budget per
task (chosen on val), and ``tables`` builds the fair comparison from their records only."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import pytest
from test_report import MINI, rec, table_rows, write_all

from heartbench.report import build
from heartbench.report.budget import budget_text
from heartbench.report.select import select_cell
from heartbench.suite import load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"
FAIR = ["vtab1k_fair.toml", "fewshot_fair.toml", "vtab_mini_fair.toml", "fewshot_mini_fair.toml"]
FIVE = {"heart_lora", "lora", "bilora", "fourierft", "mora"}


def configurations(run) -> int:
    """Configurations one run trains for its task (written out: the grid it searches on
    val, or the one configuration it is)."""
    return math.prod(len(v) for v in run.search.values()) if run.search else 1


@pytest.mark.parametrize("name", FAIR)
def test_fair_suites_give_every_method_the_same_budget(name: str) -> None:
    suite = load_suite(SUITES / name)
    assert {r.method for r in suite.runs} == FIVE
    assert all(r.eval_protocol == "val" for r in suite.runs)
    budget: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for run in suite.runs:
        budget[(run.task, run.shots, run.seed)][run.label] += configurations(run)
    for where, per_label in budget.items():
        assert len(per_label) == 5 and len(set(per_label.values())) == 1, (where, per_label)
    heart = [r for r in suite.runs if r.method == "heart_lora"]
    # ne and s in one budget, ne = 0 (no mask: Bi-LoRA) inside it.
    assert all(0 in r.search["ne"] and "scale" in r.search for r in heart)
    if "mini" in name:
        assert {r.seed for r in suite.runs} == {0, 1, 2}


def test_dry_run_states_each_runs_search(capsys: pytest.CaptureFixture[str]) -> None:
    from heartbench.cli import main

    assert main(["run", str(SUITES / "vtab_mini_fair.toml"), "--dry-run"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if re.match(r"[0-9a-f]{16} ", ln)]
    runs = {r.run_id: r for r in load_suite(SUITES / "vtab_mini_fair.toml").runs}
    assert len(lines) == len(runs)
    for line in lines:
        found = re.search(r" search=(\d+)", line)
        assert found and int(found.group(1)) == configurations(runs[line[:16]])


def test_budget_of_a_cell() -> None:
    """Configurations per task and the split: several stored configurations chosen on test;
    a val run's own search; one configuration; a range over tasks."""
    two = [rec("mnist", grid={"scale": s}, acc=a) for s, a in ((1.0, 70.0), (10.0, 72.0))]
    one = [rec("histology")]
    val = rec("counting", protocol="val", val=60.0)
    val["search"] = {"ne": [0, 3], "scale": [1.0, 3.0, 10.0]}
    cells = {t: select_cell(rs) for t, rs in (("mnist", two), ("histology", one),
                                              ("counting", [val]))}
    assert budget_text([cells["mnist"]]) == "2/test"
    assert budget_text([cells["histology"]]) == "1"
    assert budget_text([cells["counting"]]) == "6/val"
    assert budget_text([cells["mnist"], cells["histology"]]) == "1-2/test"


def test_tables_build_the_fair_comparison_from_fair_records_only(tmp_path: Path) -> None:
    records = [rec(t, "LoRA", acc=60.0) for t in MINI]  # the paper's protocol: Table T1
    for label, method, acc in (("LoRA", "lora", 61.0), ("Heart-LoRA", "heart_lora", 62.0)):
        for t in MINI:
            for seed in (0, 1):
                r = rec(t, label, method, seed=seed, acc=acc + seed, protocol="val", val=50.0,
                        suite="vtab_mini_fair",
                        config={"ne": 3, "bits": 1} if method == "heart_lora" else {})
                r["search"] = ({"ne": [0, 3], "scale": [1.0, 3.0]} if method == "heart_lora"
                               else {"scale": [0.3, 1.0, 3.0, 10.0]})
                records.append(r)
    # Few-shot, 3 seeds: MoRA 5 points above LoRA on every seed; Bi-LoRA level with MoRA
    # within its spread (differences 1.5, -1.0, 0.2: mean 0.23, std 1.29).
    offset = {"LoRA": (0.0, 0.0, 0.0), "MoRA": (5.0, 5.0, 5.0), "Bi-LoRA": (3.5, 6.0, 4.8)}
    for label, method in (("LoRA", "lora"), ("MoRA", "mora"), ("Bi-LoRA", "bilora")):
        for shots in (1, 2):
            for seed in (0, 1, 2):
                r = rec("animals", label, method, seed=seed, shots=shots, protocol="val",
                        val=40.0, benchmark="fewshot_mini", group=None,
                        suite="fewshot_mini_fair",
                        acc=30.0 + shots + 0.5 * seed + offset[label][seed])
                r["search"] = {"scale": [1.0, 3.0, 10.0, 30.0]} if method != "mora" else {
                    "variant": ["rope", "sharing"], "dropout": [0.0, 0.1]}
                records.append(r)
    results = write_all(tmp_path / "res", records)
    out = tmp_path / "out"
    build.build(results, out, source="measured", figures=False, pdf="skip")
    fair = (out / "table_fair_vtab_mini.tex").read_text()
    assert "Fair comparison" in fair and "{TF}" in fair
    # The caption's lead is LaTeX bold, not a tab character and "extbf" (a Python escape).
    assert r"\caption{\textbf{CPU twin, not the paper's numbers.}" in fair and "\t" not in fair
    rows = table_rows(fair)
    assert set(rows) == {"LoRA", "Heart-LoRA"}
    assert "Heart-LoRA {\\scriptsize [4/val]}" in fair and "LoRA {\\scriptsize [4/val]}" in fair
    paper = table_rows((out / "table1_vtab_mini.tex").read_text())
    assert set(paper) == {"LoRA"}  # the fair records feed no paper table
    assert "LoRA {\\scriptsize [1]}" in (out / "table1_vtab_mini.tex").read_text()
    few = (out / "table_fair_fewshot_mini.tex").read_text()
    assert "1-shot & 2-shot" in few
    # Bold: the paired rule of every twin table (the best, and rows within their spread of it).
    assert "LoRA {\\scriptsize [4/val]} & 31.5$\\pm$0.5 & 32.5$\\pm$0.5 \\\\" in few
    assert "MoRA {\\scriptsize [4/val]} & \\textbf{36.5$\\pm$0.5} & \\textbf{37.5$\\pm$0.5}" in few
    assert "Bi-LoRA {\\scriptsize [4/val]} & \\textbf{36.3$\\pm$1.6} & \\textbf{37.3$\\pm$1.6}" in few
    assert "paired difference" in few


@pytest.mark.parametrize("step, noted", [(None, True), ("next_epoch", True),
                                         ("reference", False)])
def test_caption_names_the_legacy_schedule_stepping(tmp_path: Path, step: str | None,
                                                    noted: bool) -> None:
    """Records from before train.schedule_step (or with its legacy value) stepped the lr
    schedule one epoch ahead of the reference loops: their table says so."""
    records = [rec(t, "LoRA", acc=60.0) for t in MINI]
    for r in records:
        if step is not None:
            r["train"]["schedule_step"] = step
    results = write_all(tmp_path / "res", records)
    build.build(results, tmp_path / "out", source="measured", figures=False, pdf="skip")
    text = (tmp_path / "out" / "table1_vtab_mini.tex").read_text()
    assert ("one epoch ahead of the reference loops" in text) == noted
