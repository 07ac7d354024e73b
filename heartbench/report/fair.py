"""The few-shot fair comparison table: one row per method, one column per shot count.

Records of ``suites/fewshot*_fair.toml`` (:func:`heartbench.report.variants.is_fair`), per
benchmark. A cell is the mean over datasets of each dataset's selected cell
(:func:`heartbench.report.select.select_cell`, one configuration per run under the val
protocol), with the sample std over seeds of the per-seed dataset mean; a shot count where
a row lacks a dataset is a dash. The VTAB fair table is Table F of
:mod:`heartbench.report.tables` (``TableSpec.fair``).
"""

from __future__ import annotations

from collections import defaultdict

from heartbench.report.budget import BUDGET_NOTE, budget_mark
from heartbench.report.latex import DASH, TexBlock, TexRow, TexTable, fmt, tex
from heartbench.report.select import (
    BENCHMARK_NAMES,
    TWIN_BENCHMARKS,
    Cell,
    mean_of,
    row_seed_set,
    select_cell,
    std_of,
    test_acc,
)
from heartbench.report.table_specs import FAIR_FEWSHOT_CAPTION
from heartbench.report.tables import BOLD_RULE, paired_bold
from heartbench.report.variants import is_fair


def _shot_stat(cells: list[Cell]) -> tuple[float, float | None, dict]:
    """Mean over datasets, the std over seeds of the per-seed dataset mean, and that
    per-seed mean (seed -> value: what the paired bold rule compares)."""
    seeds = set.intersection(*(set(c.by_seed) for c in cells))
    per_seed = {s: mean_of([c.by_seed[s] for c in cells]) for s in sorted(seeds, key=str)}
    return mean_of([c.mean for c in cells]), std_of(list(per_seed.values())), per_seed


def fewshot_models(records: list[dict]) -> list[TexTable]:
    """One fair few-shot table per benchmark with fair few-shot records."""
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if (is_fair(r) and r.get("shots") is not None and r.get("status") == "done"
                and test_acc(r) is not None):
            by_bench[r["benchmark"]].append(r)
    return [_model(bench, recs) for bench, recs in sorted(by_bench.items())]


def _model(benchmark: str, records: list[dict]) -> TexTable:
    datasets = sorted({r["task"] for r in records})
    shots = sorted({int(r["shots"]) for r in records})
    per: dict[str, dict[tuple[str, int], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        per[r["label"]][(r["task"], int(r["shots"]))].append(r)
    labels = sorted(per)
    stats, marks = [], []
    for label in labels:
        groups = dict(per[label])
        seeds = row_seed_set(groups)
        cells = {k: c for k, rs in groups.items() if (c := select_cell(rs, seeds or None))}
        row = []
        for k in shots:
            chosen = [cells.get((d, k)) for d in datasets]
            row.append(_shot_stat(chosen) if all(chosen) else None)  # type: ignore[arg-type]
        stats.append(row)
        marks.append(budget_mark(cells.values()))
    texts = [[fmt(s[0], 1) if s else DASH for s in row] for row in stats]
    strong = [paired_bold([row[c][2] if row[c] else {} for row in stats],
                          [row[c][0] if row[c] else None for row in stats])
              for c in range(len(shots))]
    rows = []
    for i, label in enumerate(labels):
        cells = []
        for c, s in enumerate(stats[i]):
            text = texts[i][c]
            if s is not None and s[1] is not None:
                text += f"$\\pm${s[1]:.1f}"
            cells.append(f"\\textbf{{{text}}}" if i in strong[c] and s is not None else text)
        rows.append(TexRow(tex(label) + marks[i], cells))
    twin = benchmark in TWIN_BENCHMARKS
    name = f"table_fair_{benchmark}"
    caption = " ".join([
        "\\textbf{CPU twin, not the paper's numbers.}" if twin else "",
        FAIR_FEWSHOT_CAPTION,
        f"Benchmark: {tex(BENCHMARK_NAMES.get(benchmark, benchmark))}; datasets: "
        f"{', '.join(tex(d) for d in datasets)}.", BUDGET_NOTE,
        BOLD_RULE]).strip()
    return TexTable(number=0, display="TF" if twin else "F", name=name,
                    template="table_groups.tex.j2", caption=caption, label=f"tab:{name}",
                    lead=[], columns=[(f"{k}-shot", "") for k in shots],
                    blocks=[TexBlock(None, rows)])
