"""Mask stability: how far the heads Heart-LoRA masks agree across seeds, against chance.

Per configuration (label, backbone, whole method config) and task, the mean pairwise Jaccard
index of the masked sets of its seeds, beside the exact expectation for masks drawn at
random with the same structure. A record's masked set is its ``(layer, head)`` pairs with
mask 0 (``heart.mask``). A random mask of the same structure draws, per *unit*, ``k`` of
its ``n`` heads uniformly and repeats that choice over the unit's ``w`` layers: in global
mode one unit per head count (ViT: every layer; Swin: a stage), per layer one unit per
layer. For two independent such masks the intersection is ``I = sum_u w_u I_u`` with
``I_u`` hypergeometric(n_u, k_u, k_u), the union ``sum_u 2 w_u k_u - I``, and
:func:`expected_jaccard` sums ``I / union`` over the exact distribution of ``I``.

Pure Python over records (no torch): :mod:`heartbench.report.build` writes the table.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from heartbench.report.variants import backbone_name, is_vtab_like

Unit = tuple[int, int, int]  # (heads n, masked k, layers w sharing the choice)


def jaccard(a: Iterable, b: Iterable) -> float:
    """|a & b| / |a | b|; two empty sets agree fully (1.0)."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def masked_set(record: dict) -> frozenset[tuple[int, int]]:
    """The ``(layer, head)`` pairs whose updates the record's mask zeroes."""
    mask = (record.get("heart") or {}).get("mask") or []
    return frozenset((layer, head) for layer, row in enumerate(mask)
                     for head, keep in enumerate(row) if not keep)


def mask_units(record: dict) -> tuple[Unit, ...]:
    """The structure a random mask of the record's size has (see the module docstring)."""
    heart = record.get("heart") or {}
    mask = heart.get("mask") or []
    if heart.get("mode") == "per_layer":
        return tuple(sorted((len(row), row.count(0), 1) for row in mask))
    groups: dict[tuple[int, int], int] = defaultdict(int)
    for row in mask:
        groups[(len(row), row.count(0))] += 1
    return tuple(sorted((n, k, w) for (n, k), w in groups.items()))


def _intersection_law(units: tuple[Unit, ...]) -> dict[int, Fraction]:
    """Exact distribution of ``sum_u w_u I_u`` for two independent random masks."""
    law = {0: Fraction(1)}
    for n, k, w in units:
        total = math.comb(n, k)
        step = {i * w: Fraction(math.comb(k, i) * math.comb(n - k, k - i), total)
                for i in range(k + 1) if math.comb(n - k, k - i)}
        law = _convolve(law, step)
    return law


def _convolve(a: dict[int, Fraction], b: dict[int, Fraction]) -> dict[int, Fraction]:
    out: dict[int, Fraction] = defaultdict(Fraction)
    for (x, p), (y, q) in itertools.product(a.items(), b.items()):
        out[x + y] += p * q
    return dict(out)


def expected_jaccard(units: tuple[Unit, ...]) -> float:
    """Exact E[Jaccard] of two independent random masks of structure ``units``."""
    size = sum(w * k for _, k, w in units)
    if size == 0:
        return 1.0
    law = _intersection_law(units)
    return float(sum(p * Fraction(i, 2 * size - i) for i, p in law.items()))


def mean_pairwise_jaccard(sets: list[frozenset]) -> float | None:
    """Mean Jaccard over all pairs of ``sets`` (None with fewer than two)."""
    pairs = list(itertools.combinations(sets, 2))
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else None


def scores_masks(record: dict) -> bool:
    """A done Heart-LoRA record whose mask was chosen from scores (not front or random) and
    masks at least one head: the masks whose agreement means something."""
    heart = record.get("heart") or {}
    return (record.get("status") == "done" and record.get("method") == "heart_lora"
            and heart.get("score") not in ("front", "random") and bool(masked_set(record)))


def scored_lr(record: dict) -> float | None:
    """Mean lr of the optimiser steps before the scores were read: stored
    (``heart.mean_lr_before_scoring``), or for records from before that key (per-epoch
    schedule) the mean of the warm-up epochs' lr in the history (exact for one epoch)."""
    heart = record.get("heart") or {}
    if "mean_lr_before_scoring" in heart:
        return heart["mean_lr_before_scoring"]
    epochs = int(heart.get("mask_epoch") or 0)
    history = ((record.get("metrics") or {}).get("history") or [])[:epochs]
    lrs = [row["lr"] for row in history if row.get("lr") is not None]
    return sum(lrs) / len(lrs) if lrs else None


@dataclass
class StabilityRow:
    """One configuration: per task its seeds' mean pairwise Jaccard and the chance level."""

    label: str
    backbone: str
    config: str
    records: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))

    def jaccard(self, task: str) -> float | None:
        return mean_pairwise_jaccard([masked_set(r) for r in self.records.get(task, [])])

    def chance(self, task: str) -> float | None:
        units = {mask_units(r) for r in self.records.get(task, [])}
        return expected_jaccard(units.pop()) if len(units) == 1 else None

    def seeds(self) -> int:
        """The fewest seeds any of the row's tasks has."""
        return min(len(rs) for rs in self.records.values())

    def lr(self) -> float | None:
        values = [v for rs in self.records.values() for r in rs if (v := scored_lr(r)) is not None]
        return sum(values) / len(values) if values else None

    def legacy(self) -> bool:
        """Whether any record predates ``heart.steps_before_scoring`` (old masks)."""
        return any("steps_before_scoring" not in (r.get("heart") or {})
                   for rs in self.records.values() for r in rs)


def stability_rows(records: list[dict], benchmark: str) -> list[StabilityRow]:
    """The rows of ``benchmark``'s table: VTAB-style records whose masks came from scores at a
    fixed size (no val search), one row per (backbone, config) with at least one task of two
    or more seeds. A run stored
    by several suites counts once, and the row takes the label most of its records carry."""
    from heartbench.report.select import config_id_across_tasks

    rows: dict[tuple[str, str], StabilityRow] = {}
    labels: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seen: set[str] = set()
    for r in sorted(records, key=lambda r: (r["run_id"], r["label"])):
        if (r.get("benchmark") != benchmark or not is_vtab_like(r) or not scores_masks(r)
                or r.get("search")):  # a run that chose its ne on val: masks of any size
            continue
        key = (backbone_name(r), config_id_across_tasks(r))  # a row spans its tasks
        labels[key][r["label"]] += 1
        if r["run_id"] in seen:
            continue
        seen.add(r["run_id"])
        rows.setdefault(key, StabilityRow("", *key)).records[r["task"]].append(r)
    for key, row in rows.items():
        row.label = sorted(labels[key].items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0][0]
    return sorted((row for row in rows.values() if any(len(rs) > 1 for rs in row.records.values())),
                  key=lambda row: (row.backbone, row.label, row.config))


def _row_name(row: StabilityRow) -> str:
    from heartbench.report.latex import tex

    heart = next(r for rs in row.records.values() for r in rs)["heart"]
    size = f"ratio={heart['ratio']:g}" if heart.get("ratio") else f"ne={heart['ne']}"
    old = ", old masks" if row.legacy() else ""
    return tex(f"{row.label} {size} [{row.backbone}{old}]")


def table_models(records: list[dict]) -> list:
    """The mask-stability table (``TWIN_TABLES``' entry) per twin benchmark with rows."""
    from heartbench.report.latex import DASH, TexBlock, TexRow, TexTable, fmt
    from heartbench.report.select import TWIN_BENCHMARKS
    from heartbench.report.stats import task_order
    from heartbench.report.table_specs import TWIN_TABLES
    from heartbench.report.tables import COLUMN_HEADER, _task_header

    spec = next(t for t in TWIN_TABLES if t.key == "mask_stability")
    models = []
    for benchmark in TWIN_BENCHMARKS:
        rows = stability_rows(records, benchmark)
        if not rows:
            continue
        groups = {t: r["group"] for row in rows for rs in row.records.values() for r in rs
                  for t in [r["task"]]}
        tasks = task_order(groups)
        out = []
        for row in rows:
            values = [row.jaccard(t) if t in row.records else None for t in tasks]
            shown = [v for v in values if v is not None]
            chances = {c for t in row.records if (c := row.chance(t)) is not None}
            lr = row.lr()
            out.append(TexRow(_row_name(row), [
                str(row.seeds()), f"{lr:.1e}" if lr is not None else DASH,
                fmt(chances.pop(), 2) if len(chances) == 1 else DASH,
                fmt(sum(shown) / len(shown), 2) if shown else DASH,
                *[fmt(v, 2) for v in values]]))
        legacy = any(row.legacy() for row in rows)
        caption = spec.caption + (
            " Rows marked ``old masks'' are records from before the twin's per-step warm-up:"
            " their heads were scored after one per-epoch warm-up epoch at lr 1e-6, on"
            " adapters that had not moved from their initialisation." if legacy else "")
        name = f"table{spec.number}_{benchmark}"
        models.append(TexTable(
            number=spec.number, display=f"T{spec.number}", name=name, template=spec.template,
            caption=caption, label=f"tab:{name}", lead=["Seeds", "lr", "Chance", "Avg."],
            columns=[(_task_header(t), COLUMN_HEADER[groups[t]]) for t in tasks],
            blocks=[TexBlock(None, out)], wide=len(tasks) > 6))
    return models
