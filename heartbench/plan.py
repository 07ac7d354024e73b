"""What ``run --dry-run`` (and ``bench``'s plan) prints: every run's line, the totals (runs,
trainings, epochs, searches), then every problem that would stop ``run``."""

from __future__ import annotations

from typing import Any


def print_plan(suite: Any, runs: list[Any], seconds: float) -> None:
    for run in runs:
        print(run.describe())
    tasks = len({r.task for r in runs})
    labels = len({r.label for r in runs})
    epochs = sum(r.train["epochs"] * phases(r) for r in runs)
    searched = sum(phases(r) - 1 for r in runs)
    from heartbench.suite import FEWSHOT_BENCHMARKS

    where = ("the k-shot train set, scored on val" if suite.benchmark in FEWSHOT_BENCHMARKS
             else "train800, scored on val200")
    search = f", plus {searched} search trainings (each grid point on {where})" if searched else ""
    protocols = ", ".join(sorted({r.eval_protocol for r in runs} or {suite.eval_protocol}))
    print(f"plan: {len(runs)} runs ({tasks} tasks x {labels} methods/variants, grids and seeds"
          f" expanded){search}, {epochs} training epochs in all; suite {suite.name}, benchmark"
          f" {suite.benchmark}, eval protocol {protocols}; planned in {seconds:.2f} s")


def phases(run: Any) -> int:
    """Trainings one run does: 1, or under eval_protocol "val" one per searched grid point
    and the final one (heartbench.train.select_on_val)."""
    return 1 + run.searched


def dry_run(pf: Any, seconds: float) -> int:
    """The plan, then every problem that would stop ``run`` (exit 2), else 0. Writes
    nothing: missing twin data is only announced."""
    from heartbench import preflight

    problems = preflight.collect(pf)
    if pf.to_write:
        print(f"note: {pf.suite.benchmark} tasks {', '.join(pf.to_write)} are not in"
              f" {pf.suite.data_root} yet: `run` writes them first")
    print_plan(pf.suite, pf.runs, seconds)
    if problems:
        raise preflight.problems_error(problems, dry_run=True)
    return 0
