"""Paired differences on the CPU twins: every row against Heart-LoRA, pair by pair.

The twin tables show means and seed spreads; whether one row is better than another is a
paired question (the same task, shot count and seed: the same data split, initialisation and
batch order up to the method). Per twin benchmark this builds Table T8: within each *family*
of rows (backbone; the fair-protocol suites apart), each row minus the family's reference
row, over the ``(task, shots, seed)`` units both ran:

- the reference is Heart-LoRA as the paper runs it (:func:`heartbench.report.variants.
  heart_key` "heart_lora", fixed ne = 3 where there are several ne; few-shot: its only
  configuration); in a fair family, Heart-LoRA chosen on val;
- a row is one configuration across tasks (:func:`row_id`: method, whole config, grid
  point, search, run setting, protocol), so an ne sweep gives one row per ne;
- a run stored by several suites (``reused_from``: the same run id, so the same row and
  unit) counts once.

Columns: pairs, tasks, mean difference, its sample std, better / worse / equal pairs and
the two-sided Wilcoxon signed-rank p (zero differences dropped; scipy), uncorrected for the
number of rows. Pure Python and scipy over records (no torch).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from heartbench.report.select import (
    TWIN_BENCHMARKS,
    config_id_across_tasks,
    run_setting,
    test_acc,
)
from heartbench.report.variants import backbone_name, heart_key, is_fair, ne_of

Unit = tuple[str, object, object]  # (task, shots, seed)
REFERENCE_NE = 3  # the twins' main Heart-LoRA row (suites/vtab_mini.toml)


def row_id(record: dict) -> str:
    """One configuration across tasks (:func:`config_id_across_tasks`); under the fair
    protocol one row per method and run setting, whatever point each run chose."""
    if is_fair(record):
        return json.dumps({"fair": record.get("label"), "setting": run_setting(record)},
                          sort_keys=True, default=str)
    return config_id_across_tasks(record)


@dataclass
class PairedRow:
    name: str
    values: dict[Unit, float] = field(default_factory=dict)
    ne: int | None = None
    heart: bool = False


@dataclass
class Comparison:
    """``row`` minus ``reference`` over their common units."""

    diffs: list[float]
    tasks: int

    @property
    def better(self) -> int:
        return sum(d > 0 for d in self.diffs)

    @property
    def worse(self) -> int:
        return sum(d < 0 for d in self.diffs)

    @property
    def equal(self) -> int:
        return sum(d == 0 for d in self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.diffs) if len(self.diffs) > 1 else None

    @property
    def p(self) -> float | None:
        """Two-sided Wilcoxon signed-rank p, zero differences dropped; None below 2 non-zero."""
        from scipy.stats import wilcoxon

        nonzero = [d for d in self.diffs if d != 0]
        if len(nonzero) < 2:
            return None
        return float(wilcoxon(nonzero).pvalue)


def compare(row: PairedRow, reference: PairedRow) -> Comparison:
    common = sorted(set(row.values) & set(reference.values), key=str)
    diffs = [round(row.values[u] - reference.values[u], 6) for u in common]
    return Comparison(diffs, len({u[0] for u in common}))


def families(records: list[dict], benchmark: str) -> dict[str, list[PairedRow]]:
    """Family title -> its rows (first: the reference), for one twin benchmark. A family:
    one backbone, fair protocol or not; rows of other training settings (Full's own lr,
    records of older defaults) are rows of their own (:func:`row_id`)."""
    rows: dict[str, dict[str, PairedRow]] = defaultdict(dict)
    labels: dict[int, Counter] = defaultdict(Counter)
    for r in records:
        acc = test_acc(r)
        if r.get("benchmark") != benchmark or r.get("status") != "done" or acc is None:
            continue
        family = f"{backbone_name(r)}{', fair protocol' if is_fair(r) else ''}"
        row = rows[family].setdefault(row_id(r), PairedRow(
            "", ne=ne_of(r), heart=heart_key(r) == "heart_lora" and (
                is_fair(r) or not r.get("search"))))
        # A run reused by another suite has one result under two labels: one unit, and the
        # row takes the label most of its records carry (the shorter on a tie).
        row.values[(r["task"], r.get("shots"), r.get("seed"))] = acc
        labels[id(row)][str(r.get("label"))] += 1
    out = {}
    for family, by_id in sorted(rows.items()):
        for row in by_id.values():
            row.name = min(labels[id(row)].items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
        ordered = _name(list(by_id.values()))
        reference = _reference(ordered)
        if reference is not None:
            out[family] = [reference] + [r for r in ordered if r is not reference]
    return out


def _reference(rows: list[PairedRow]) -> PairedRow | None:
    heart = [r for r in rows if r.heart]
    if not heart:
        return None
    main = [r for r in heart if r.ne == REFERENCE_NE]
    return max(main or heart, key=lambda r: len(r.values))


def _name(rows: list[PairedRow]) -> list[PairedRow]:
    """Labels made unique within a family: ``ne=N`` where that tells rows apart, else #k."""
    by_label: dict[str, list[PairedRow]] = defaultdict(list)
    for row in rows:
        by_label[row.name].append(row)
    for label, same in by_label.items():
        if len(same) < 2:
            continue
        nes = [r.ne for r in same]
        for i, row in enumerate(same):
            row.name = (f"{label} ne={row.ne}" if None not in nes and len(set(nes)) == len(nes)
                        else f"{label} #{i + 1}")
    return sorted(rows, key=lambda r: (r.name.split(" ne=")[0], r.ne or 0, r.name))


def _p_text(p: float | None) -> str:
    from heartbench.report.latex import DASH, fmt

    if p is None:
        return DASH
    return "$<$0.001" if p < 0.001 else fmt(p, 3)


def table_models(records: list[dict]) -> list:
    """Table T8 (``TWIN_TABLES``' "paired" entry) per twin benchmark with a reference row."""
    from heartbench.report.latex import TexBlock, TexRow, TexTable, fmt, tex
    from heartbench.report.table_specs import TWIN_TABLES

    spec = next(t for t in TWIN_TABLES if t.key == "paired")
    models = []
    for benchmark in TWIN_BENCHMARKS:
        blocks = []
        for family, rows in families(records, benchmark).items():
            reference, others = rows[0], rows[1:]
            out = []
            for row in others:
                c = compare(row, reference)
                if not c.diffs:
                    continue
                out.append(TexRow(tex(row.name), [
                    str(len(c.diffs)), str(c.tasks), fmt(c.mean, 2),
                    fmt(c.std, 2), f"{c.better}/{c.worse}/{c.equal}",
                    _p_text(c.p)]))
            if out:
                blocks.append(TexBlock(tex(f"{family}: each row minus {reference.name}"), out))
        if not blocks:
            continue
        name = f"table{spec.number}_{benchmark}"
        unit = "(dataset, shots, seed)" if benchmark.startswith("fewshot") else "(task, seed)"
        models.append(TexTable(
            number=spec.number, display=f"T{spec.number}", name=name, template=spec.template,
            caption=spec.caption.replace("UNIT", unit), label=f"tab:{name}", lead=[],
            columns=[(h, "") for h in ("Pairs", "Tasks", "Diff.", "Std", "+/$-$/=", "$p$")],
            blocks=blocks))
    return models
