"""The paper's Tables 1-6 as LaTeX: reported rows from ``baselines/``, measured rows from records.

Which records feed which table (only records with status "done" and a test accuracy;
decided from the record fields alone, by :func:`tables_for`):

* VTAB-style records are those with a ``group`` and no ``shots`` (benchmarks vtab1k,
  vtab_mini, synth). Few-shot records feed Figure 2 only.
* Backbone: a record whose ``backbone.name`` contains "swin" feeds Table 4 only (every
  label); every other (ViT) record feeds Tables 1-3, 5, 6 as below.
* Heart-LoRA variants (method ``heart_lora``), from ``method_config`` (defaults: bits 1,
  mode global, score taylor):
    - main: score taylor / neg_taylor / abs_taylor, mode global, bits < 32
      -> Table 1, Table 2 (quantised row), Table 6 (Heart-LoRA row)
    - FP32: the same with bits 32                        -> Table 2
    - per_layer + taylor family (Heart-LoRA dagger)      -> Table 3
    - per_layer + weight_l2 or grad_l2                   -> Table 5
    - score front (any mode)                             -> Table 6 (Front row)
    - anything else (random, global weight_l2, ...)      -> no table (listed by ``tables``)
* Other methods: Table 1 under their label; labels "Full" and "LoRA" (case and punctuation
  ignored) are also the baseline rows of Tables 3, 5 and 6, as in the paper.
* Heart-LoRA records with ne outside the paper's search space {1, 3, 6} plus its fallback 0
  (the ne sweep of suite ablation_ne for Figs 4 and 8) feed no table. Swin runs mask by
  ``ratio``; ne does not apply there.

Rows: one per (label, variant, eval protocol), pooled over suites: the suites of the paper
(vtab1k, fp32, per_layer, score_variants, arbitrary_mask, swin_vtab1k) store some runs
twice (the run_id hashes the run's config, not its suite), and a run stored under one
label by several suites counts once. A label with records of two variants or protocols
gets one row each, told apart in the row name. One table file per benchmark: the paper's
benchmark (vtab1k) shares ``table<n>.tex`` with the reported rows; other benchmarks (the
CPU twin vtab_mini, synth) get ``table<n>_<benchmark>.tex`` with the task columns their
records have, grouped by the records' ``group``. ``table<n>_diff.tex`` shows measured
minus reported where both exist (``--source both``). Measured rows follow the paper's
row order where the paper has the row, then by label. Tables 2, 3, 5 and 6 get a measured
block only when it has their own variant (FP32, per-layer, weight/grad, front): the Full,
LoRA and Heart-LoRA rows they repeat are not a table by themselves.

Cells: per (row, task) the grid configurations (``grid``) are compared by their mean over
seeds of the test accuracy (of the validation accuracy when the records' eval_protocol is
"val"), the best is shown (ties: the first in sorted order), and the caption says so. A
cell shows the mean over seeds of that configuration, "+-std" (sample std) when there are
several seeds, and a superscript seed count where it has fewer seeds than the table. Group
columns are means of the group's task means and Avg. is the mean of the three group means
(the paper's way); a group with a missing task, or a missing task, is a dash. Size = mean
over tasks of ``adapter.stored_bytes`` / 2**20 (the paper's "MB", head excluded). The best
value of each accuracy column (as displayed) is bold within each block of rows.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from heartbench.report import reference as ref

TAYLOR_SCORES: tuple[str, ...] = ("taylor", "neg_taylor", "abs_taylor")
ABLATION_BASELINES: tuple[str, ...] = ("full", "lora")  # repeated from Table 1 in Tables 3, 5, 6
# The paper searches ne in {1, 3, 6} and falls back to ne = 0 where masking hurts (App. F.5).
PAPER_NE: tuple[int, ...] = (0, 1, 3, 6)
TABLE_NUMBERS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
# A measured block is written only when it has a row of what its table is about (not
# just the Full / LoRA rows that Tables 3, 5 and 6 repeat, or the main row Table 2 repeats).
DEFINING_KEYS: dict[int, tuple[str, ...]] = {
    2: ("heart_lora_fp32",),
    3: ("heart_lora_per_layer",),
    5: ("heart_lora_per_layer_weight", "heart_lora_per_layer_grad"),
    6: ("front",),
}
PAPER_BENCHMARK = "vtab1k"
BENCHMARK_NAMES: dict[str, str] = {
    "vtab1k": "VTAB-1K",
    "vtab_mini": "VTAB-mini twin",
    "synth": "synthetic twin",
    "fewshot": "few-shot",
    "fewshot_mini": "few-shot twin",
}
PROTOCOL_TEXT: dict[str, str] = {
    "last": "last-epoch test accuracy",
    "val": "test accuracy of the configuration chosen on the validation split",
    "best_of_test": "best test accuracy over the evaluated epochs (the reference code's protocol)",
}
# Column order of Tables 2-6 as printed (Table 2 puts the average last).
GROUP_LAYOUT: dict[int, tuple[str, ...]] = {
    2: ("natural", "specialized", "structured", "avg"),
    3: ("avg", "natural", "specialized", "structured"),
    4: ("avg", "natural", "specialized", "structured"),
    5: ("avg", "natural", "specialized", "structured"),
    6: ("avg", "natural", "specialized", "structured"),
}
COLUMN_HEADER: dict[str, str] = {
    "avg": "Average", "natural": "Natural", "specialized": "Specialized",
    "structured": "Structured",
}
DASH = "--"
TABLE_SUBJECT: dict[int, str] = {
    1: "accuracy per task, size and average",
    2: "1-bit vs FP32 adapters",
    3: "per-layer Heart-LoRA$^\\dagger$",
    4: "Swin backbone",
    5: "weight-L2 and grad-L2 responsiveness, per layer",
    6: "front (arbitrary) deactivation vs Heart-LoRA",
}


# ---------------------------------------------------------------------------
# Which records feed which table
# ---------------------------------------------------------------------------
def backbone_name(record: dict) -> str:
    return str((record.get("backbone") or {}).get("name") or "")


def is_swin(record: dict) -> bool:
    return "swin" in backbone_name(record).lower()


def heart_key(record: dict) -> str | None:
    """The Heart-LoRA variant of a record (None for other methods)."""
    if record["method"] != "heart_lora":
        return None
    cfg = record.get("method_config") or {}
    score = cfg.get("score", "taylor")
    mode = cfg.get("mode", "global")
    bits = cfg.get("bits", 1)
    if score == "front":
        return "front"
    if score in TAYLOR_SCORES:
        if mode == "per_layer":
            return "heart_lora_per_layer"
        return "heart_lora_fp32" if bits is not None and bits >= 32 else "heart_lora"
    if mode == "per_layer" and score == "weight_l2":
        return "heart_lora_per_layer_weight"
    if mode == "per_layer" and score == "grad_l2":
        return "heart_lora_per_layer_grad"
    return f"heart_lora_{mode}_{score}"


def row_key(record: dict) -> str:
    """What a measured row is matched on: the Heart-LoRA variant, else the label."""
    return heart_key(record) or ref.normalize_label(record["label"])


def is_vtab_like(record: dict) -> bool:
    return record.get("group") is not None and record.get("shots") is None


def _ne(record: dict) -> int | None:
    value = (record.get("method_config") or {}).get("ne")
    if value is None:
        value = (record.get("grid") or {}).get("ne")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def tables_for(record: dict) -> tuple[int, ...]:
    """The numbers of the tables a record feeds (see the module docstring)."""
    if record.get("status") != "done" or not is_vtab_like(record):
        return ()
    if is_swin(record):
        return (4,)
    heart, key = heart_key(record), row_key(record)
    if heart is not None and _ne(record) not in (None, *PAPER_NE):
        return ()  # the ne sweep of Figs 4 and 8, outside the paper's search space
    out: set[int] = set()
    if heart in (None, "heart_lora"):
        out.add(1)
    if heart in ("heart_lora", "heart_lora_fp32"):
        out.add(2)
    if heart is None and key in ABLATION_BASELINES:
        out.update((3, 5, 6))
    if heart == "heart_lora_per_layer":
        out.add(3)
    if heart in ("heart_lora_per_layer_weight", "heart_lora_per_layer_grad"):
        out.add(5)
    if heart in ("front", "heart_lora"):
        out.add(6)
    return tuple(sorted(out))


def reported_match(row: ref.ReportedRow, key: str) -> bool:
    """Whether a measured row key is the printed row ``row``."""
    return key == row.key or key == ref.normalize_label(row.method)


# ---------------------------------------------------------------------------
# Aggregation over seeds and grid configurations
# ---------------------------------------------------------------------------
def config_id(record: dict) -> str:
    return json.dumps(record.get("grid") or {}, sort_keys=True)


def test_acc(record: dict) -> float | None:
    value = (record.get("metrics") or {}).get("test_acc")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def val_acc(record: dict) -> float | None:
    value = (record.get("metrics") or {}).get("val_acc")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Cell:
    """One (row, task): the selected grid configuration's accuracy per seed."""

    by_seed: dict[Any, float]
    config: str
    n_configs: int
    selected_on: str  # "test", "val" or "only" (a single configuration)
    stored_bytes: float | None

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return _mean(list(self.by_seed.values()))

    @property
    def std(self) -> float | None:
        return _std(list(self.by_seed.values()))


def _by_seed(records: list[dict], metric: Any) -> dict[Any, float]:
    """Metric per seed (several records of one seed and config are averaged)."""
    per: dict[Any, list[float]] = defaultdict(list)
    for r in records:
        value = metric(r)
        if value is not None:
            per[r["seed"]].append(value)
    return {seed: _mean(v) for seed, v in sorted(per.items(), key=lambda kv: str(kv[0]))}


def select_cell(records: list[dict]) -> Cell | None:
    """The best grid configuration of one (row, task) and its per-seed accuracies."""
    configs: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if test_acc(r) is not None:
            configs[config_id(r)].append(r)
    if not configs:
        return None
    on_val = all(r.get("eval_protocol") == "val" and val_acc(r) is not None
                 for rs in configs.values() for r in rs)
    metric = val_acc if on_val else test_acc
    scored = sorted((-_mean(list(_by_seed(rs, metric).values())), cid)
                    for cid, rs in configs.items())
    best = scored[0][1]
    chosen = configs[best]
    sizes = [float(r["adapter"]["stored_bytes"]) for r in chosen
             if isinstance((r.get("adapter") or {}).get("stored_bytes"), (int, float))]
    return Cell(
        by_seed=_by_seed(chosen, test_acc),
        config=best,
        n_configs=len(configs),
        selected_on=("val" if on_val else "test") if len(configs) > 1 else "only",
        stored_bytes=_mean(sizes) if sizes else None,
    )


@dataclass(frozen=True)
class Stat:
    """A displayed number: mean, std over seeds (or None), seed count."""

    mean: float | None
    std: float | None = None
    n: int = 0


@dataclass
class MeasuredRow:
    key: str
    label: str
    protocol: str
    cells: dict[str, Cell]
    name: str = ""  # display name (label, disambiguated within its block)

    def task_stat(self, task: str) -> Stat:
        cell = self.cells.get(task)
        if cell is None:
            return Stat(None)
        return Stat(cell.mean, cell.std, cell.n)

    def column_stats(self, task_group: dict[str, str]) -> dict[str, Stat]:
        """Group means and the paper's Avg., each with a std over complete seeds."""
        means = ref.group_means({t: self.task_stat(t).mean for t in task_group}, task_group)
        out: dict[str, Stat] = {}
        seeds = sorted({s for c in self.cells.values() for s in c.by_seed}, key=str)
        per_seed_groups: dict[Any, dict[str, float | None]] = {}
        for seed in seeds:
            values = {t: c.by_seed.get(seed) for t, c in self.cells.items()}
            per_seed_groups[seed] = ref.group_means(values, task_group)
        for group in ref.GROUPS:
            present = [per_seed_groups[s][group] for s in seeds if per_seed_groups[s][group] is not None]
            tasks = [t for t, g in task_group.items() if g == group]
            n = min((self.task_stat(t).n for t in tasks), default=0)
            out[group] = Stat(means[group], _std(present) if len(present) > 1 else None, n)  # type: ignore[arg-type]
        avg = ref.paper_average(means)
        per_seed_avg = [ref.paper_average(per_seed_groups[s]) for s in seeds]
        complete = [a for a in per_seed_avg if a is not None]
        n_avg = min((out[g].n for g in ref.GROUPS), default=0)
        out["avg"] = Stat(avg, _std(complete) if len(complete) > 1 else None, n_avg)
        return out

    def size_mib(self) -> float | None:
        sizes = [c.stored_bytes for c in self.cells.values() if c.stored_bytes is not None]
        return _mean(sizes) / 2**20 if sizes else None


@dataclass
class MeasuredBlock:
    """The measured rows of one table on one benchmark."""

    table: int
    benchmark: str
    tasks: list[str]
    task_group: dict[str, str]
    rows: list[MeasuredRow]
    seeds: int  # most seeds of any cell: the table's seed count
    protocols: list[str]
    selected_on: list[str]  # "test" / "val" when some cell had several configurations
    backbones: list[str] = field(default_factory=list)

    def title(self) -> str:
        """The short heading of the measured rows inside a table."""
        bench = BENCHMARK_NAMES.get(self.benchmark, self.benchmark)
        return f"Measured ({bench}, {self.seeds} seed{'s' if self.seeds != 1 else ''})"

    def description(self) -> str:
        """What the measured rows are and how they were computed, for the caption."""
        parts = [f"{self.title()}: backbone {', '.join(tex(b) for b in self.backbones)}."]
        protocols = "; ".join(PROTOCOL_TEXT.get(p, p) for p in self.protocols)
        parts.append(f"Accuracy: {protocols}.")
        if self.selected_on:
            on = " or ".join(
                {"test": "mean test accuracy over seeds (selection on the test set, as in the paper)",
                 "val": "mean validation accuracy over seeds (selection on val)"}[s]
                for s in self.selected_on)
            parts.append(f"Where a row has several grid configurations, each task shows the one "
                         f"with the best {on}.")
        if self.seeds > 1:
            parts.append("$\\pm$: sample std over seeds; a superscript gives the seed count of a "
                         "cell with fewer seeds.")
        if self.table == 1:
            parts.append("Size: MB = $2^{20}$ bytes of stored adapter, head excluded.")
        return " ".join(parts)


def _task_order(tasks: dict[str, str]) -> list[str]:
    """VTAB-1K tasks in the paper's order; other tasks by group, then name."""
    rank = {t: i for i, t in enumerate(ref.VTAB_TASKS)}
    group_rank = {g: i for i, g in enumerate(ref.GROUPS)}
    return sorted(tasks, key=lambda t: (group_rank.get(tasks[t], 9), rank.get(t, 99), t))


def _row_order(table: int, reported: dict[int, ref.ReportedTable] | None):
    rows = reported[table].rows if reported and table in reported else []

    def order(row: MeasuredRow) -> tuple:
        index = next((i for i, r in enumerate(rows) if reported_match(r, row.key)), len(rows))
        return (index, row.label, row.key, row.protocol)

    return order


def build_blocks(records: list[dict],
                 reported: dict[int, ref.ReportedTable] | None = None) -> list[MeasuredBlock]:
    """Every measured block (table x benchmark) the records make, in a fixed order."""
    placed: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in records:
        if test_acc(r) is None:
            continue
        for table in tables_for(r):
            placed[(table, r["benchmark"])].append(r)
    blocks = []
    for (table, benchmark), recs in sorted(placed.items()):
        task_group = _block_tasks(recs, benchmark)
        by_row: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(
            lambda: defaultdict(list))
        seen: set[tuple[str, str]] = set()
        for r in recs:
            # One run stored by several suites (same run_id and label) counts once.
            if (r["run_id"], r["label"]) in seen:
                continue
            seen.add((r["run_id"], r["label"]))
            ident = (row_key(r), r["label"], str(r.get("eval_protocol")))
            by_row[ident][r["task"]].append(r)
        rows = []
        for (key, label, protocol), per_task in sorted(by_row.items()):
            cells = {t: c for t, rs in sorted(per_task.items()) if (c := select_cell(rs)) is not None}
            rows.append(MeasuredRow(key=key, label=label, protocol=protocol, cells=cells))
        if table in DEFINING_KEYS and not any(r.key in DEFINING_KEYS[table] for r in rows):
            continue
        rows.sort(key=_row_order(table, reported))
        _name_rows(rows)
        cells = [c for row in rows for c in row.cells.values()]
        selected = sorted({c.selected_on for c in cells if c.selected_on != "only"})
        blocks.append(MeasuredBlock(
            table=table, benchmark=benchmark, tasks=_task_order(task_group),
            task_group=task_group, rows=rows, seeds=max((c.n for c in cells), default=0),
            protocols=sorted({str(r.get("eval_protocol")) for r in recs}),
            selected_on=selected, backbones=sorted({backbone_name(r) or "?" for r in recs}),
        ))
    return blocks


def _block_tasks(records: list[dict], benchmark: str) -> dict[str, str]:
    """Task -> group for a block: all 19 tasks on VTAB-1K (missing ones show dashes)."""
    if benchmark == PAPER_BENCHMARK:
        return dict(ref.TASK_GROUP)
    votes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        votes[r["task"]][r["group"]] += 1
    return {t: sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for t, v in votes.items()}


def _name_rows(rows: list[MeasuredRow]) -> None:
    """Row names: the label, plus the variant or protocol where two rows share a label."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.label] += 1
    for row in rows:
        row.name = row.label
        if counts[row.label] > 1:
            same = [r for r in rows if r.label == row.label]
            extra = []
            if len({r.key for r in same}) > 1:
                extra.append(row.key)
            if len({r.protocol for r in same}) > 1:
                extra.append(row.protocol)
            row.name = f"{row.label} [{', '.join(extra) or row.key}]"


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------
_TEX_SPECIAL = {
    "\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
    "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
    "\u2020": "$^\\dagger$",
}


def tex(text: str) -> str:
    """Escape plain text for LaTeX (the dagger becomes a superscript)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def fmt(value: float | None, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_size(mib: float | None) -> str:
    if mib is None:
        return DASH
    if mib == 0:
        return "0"
    return f"{mib:.2f}" if mib >= 0.1 else f"{mib:.3f}"


def fmt_signed(value: float | None, decimals: int) -> str:
    if value is None:
        return DASH
    text = f"{abs(value):.{decimals}f}"
    if float(text) == 0:
        return text
    return f"+{text}" if value > 0 else f"$-${text}"


def bold_set(texts: list[str]) -> set[int]:
    """Indices of the best (largest) displayed numbers in a column; dashes never win."""
    numbers = {i: float(t) for i, t in enumerate(texts) if t != DASH}
    if not numbers:
        return set()
    best = max(numbers.values())
    return {i for i, v in numbers.items() if v == best}


def _bold(text: str) -> str:
    return f"\\textbf{{{text}}}"


def stat_cell(stat: Stat, decimals: int, bold: bool, seeds: int) -> str:
    if stat.mean is None:
        return DASH
    text = fmt(stat.mean, decimals)
    text = _bold(text) if bold else text
    if stat.std is not None:
        text += f"{{\\scriptsize$\\pm${fmt(stat.std, decimals)}}}"
    if 0 < stat.n < seeds:
        text += f"$^{{{stat.n}}}$"
    return text


# ---------------------------------------------------------------------------
# LaTeX table models (rendered by the Jinja2 templates)
# ---------------------------------------------------------------------------
@dataclass
class TexRow:
    name: str
    cells: list[str]


@dataclass
class TexBlock:
    title: str | None
    rows: list[TexRow]


@dataclass
class TexTable:
    """What a template needs: columns, grouped header, blocks of rows, caption."""

    number: int  # the paper's table this one mirrors
    name: str  # file stem, e.g. table1_vtab_mini
    template: str
    caption: str
    label: str
    lead: list[str]  # leading column headers after "Method" (Size, Avg.)
    columns: list[tuple[str, str]]  # (header, group) per data column
    blocks: list[TexBlock]
    wide: bool = False

    @property
    def ncols(self) -> int:
        return 1 + len(self.lead) + len(self.columns)

    @property
    def groups(self) -> list[tuple[str, int, int]]:
        """(group header, first column 1-based, last column) for the grouped header row."""
        out: list[tuple[str, int, int]] = []
        start = 2 + len(self.lead)
        for i, (_, group) in enumerate(self.columns):
            col = start + i
            if out and out[-1][0] == group:
                out[-1] = (group, out[-1][1], col)
            else:
                out.append((group, col, col))
        return out

    @property
    def colspec(self) -> str:
        return "l" + "r" * len(self.lead) + "c" * len(self.columns)


def _columns_bold(rows: list[list[str]], skip: int = 0) -> list[set[int]]:
    """Per column (after ``skip`` columns), the row indices to bold."""
    if not rows:
        return []
    return [bold_set([r[c] for r in rows]) for c in range(skip, len(rows[0]))]


def _apply_bold(rows: list[list[str]], skip: int) -> list[list[str]]:
    marks = _columns_bold(rows, skip)
    return [[(_bold(t) if c >= skip and i in marks[c - skip] and t != DASH else t)
             for c, t in enumerate(r)] for i, r in enumerate(rows)]


def reported_task_block(table: ref.ReportedTable) -> list[TexBlock]:
    """Table 1's printed rows, in its sections, best accuracy per column in bold."""
    values = [[r.values[c] for c in ("avg", *ref.VTAB_TASKS)] for r in table.rows]
    bolded = _apply_bold(values, 0)
    blocks: list[TexBlock] = []
    for row, cells in zip(table.rows, bolded, strict=True):
        texrow = TexRow(tex(row.method), [row.values["size_mb"], *cells])
        if not blocks or blocks[-1].title != row.section:
            blocks.append(TexBlock(row.section, []))
        blocks[-1].rows.append(texrow)
    return blocks


def _delta(text: str) -> str:
    if not text:
        return ""
    arrow = "downarrow" if text.startswith("-") else "uparrow"
    return f" ($\\{arrow}$ {text.lstrip('+-')})"


def reported_group_block(table: ref.ReportedTable) -> TexBlock:
    layout = GROUP_LAYOUT[table.number]
    values = [[r.values[c] for c in layout] for r in table.rows]
    marks = _columns_bold(values)
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for c, col in enumerate(layout):
            text = row.values[col]
            text = _bold(text) if i in marks[c] and text else (text or DASH)
            cells.append(text + _delta(row.deltas.get(f"d_{col}", "")))
        rows.append(TexRow(tex(row.method), cells))
    return TexBlock(None, rows)


def measured_task_block(block: MeasuredBlock, decimals: int = 1) -> TexBlock:
    texts, stats = [], []
    for row in block.rows:
        columns = row.column_stats(block.task_group)
        row_stats = [columns["avg"], *[row.task_stat(t) for t in block.tasks]]
        stats.append(row_stats)
        texts.append([fmt(s.mean, decimals) for s in row_stats])
    marks = _columns_bold(texts)
    rows = []
    for i, row in enumerate(block.rows):
        cells = [stat_cell(s, decimals, i in marks[c], block.seeds) for c, s in enumerate(stats[i])]
        rows.append(TexRow(tex(row.name), [fmt_size(row.size_mib()), *cells]))
    return TexBlock(block.title(), rows)


def measured_group_block(block: MeasuredBlock, decimals: int) -> TexBlock:
    layout = GROUP_LAYOUT[block.table]
    stats = []
    for row in block.rows:
        columns = row.column_stats(block.task_group)
        stats.append([columns[c] for c in layout])
    texts = [[fmt(s.mean, decimals) for s in r] for r in stats]
    marks = _columns_bold(texts)
    rows = [TexRow(tex(row.name), [stat_cell(s, decimals, i in marks[c], block.seeds)
                                   for c, s in enumerate(stats[i])])
            for i, row in enumerate(block.rows)]
    return TexBlock(block.title(), rows)


def _task_header(task: str) -> str:
    return ref.TASK_HEADER.get(task, tex(task))


def _caption(number: int, has_reported: bool, block: MeasuredBlock | None) -> str:
    parts = []
    if has_reported:
        parts.append(ref.TABLE_CAPTIONS[number])
        parts.append("Reported rows: the paper's numbers as printed (bold: best per column).")
    if block is not None:
        if not has_reported:
            parts.append(f"Measured counterpart of the paper's Table {number} "
                         f"({TABLE_SUBJECT[number]}).")
        parts.append("Measured rows come from the stored run records (bold: best measured per "
                     "column).")
        parts.append(block.description())
        if number != 1 and block.benchmark != PAPER_BENCHMARK:
            groups = [f"{g} = {', '.join(tex(t) for t in block.tasks if block.task_group[t] == g)}"
                      for g in ref.GROUPS if any(block.task_group[t] == g for t in block.tasks)]
            parts.append(f"Tasks: {'; '.join(groups)}.")
    return " ".join(parts)


def table_model(number: int, reported: ref.ReportedTable | None,
                block: MeasuredBlock | None) -> TexTable:
    """One table: the printed rows and/or one measured block, in the paper's layout."""
    bench = block.benchmark if block is not None else PAPER_BENCHMARK
    name = f"table{number}" if bench == PAPER_BENCHMARK else f"table{number}_{bench}"
    caption = _caption(number, reported is not None, block)
    decimals = 2 if number == 2 else 1
    if number == 1:
        tasks = block.tasks if block is not None else list(ref.VTAB_TASKS)
        groups = block.task_group if block is not None else ref.TASK_GROUP
        blocks = reported_task_block(reported) if reported is not None else []
        if block is not None:
            blocks.append(measured_task_block(block, decimals))
        return TexTable(number=number, name=name, template="table_tasks.tex.j2", caption=caption,
                        label=f"tab:{name}", lead=["Size (MB)", "Avg. Acc."],
                        columns=[(_task_header(t), COLUMN_HEADER[groups[t]]) for t in tasks],
                        blocks=blocks, wide=True)
    layout = GROUP_LAYOUT[number]
    blocks = [reported_group_block(reported)] if reported is not None else []
    if block is not None:
        blocks.append(measured_group_block(block, decimals))
    return TexTable(number=number, name=name, template="table_groups.tex.j2", caption=caption,
                    label=f"tab:{name}", lead=[],
                    columns=[(COLUMN_HEADER[c], "") for c in layout], blocks=blocks)


# ---------------------------------------------------------------------------
# Measured vs reported
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Deviation:
    table: int
    label: str
    key: str
    column: str
    measured: float
    reported: float
    seeds: int

    @property
    def diff(self) -> float:
        return self.measured - self.reported


def deviations(blocks: list[MeasuredBlock],
               reported: dict[int, ref.ReportedTable]) -> tuple[list[Deviation], list[str]]:
    """Measured minus reported for every (table, row, column) both have; and what has none.

    Only the paper's benchmark (vtab1k) has reported counterparts; rows of other
    benchmarks and labels the paper does not print are returned as lines to list, one per
    table and benchmark.
    """
    found: list[Deviation] = []
    missing: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for block in blocks:
        table = reported.get(block.table)
        for row in block.rows:
            match = None
            if block.benchmark == PAPER_BENCHMARK and table is not None:
                match = next((r for r in table.rows if reported_match(r, row.key)), None)
            if match is None:
                why = ("its tasks are not the paper's" if block.benchmark != PAPER_BENCHMARK
                       else "the paper prints no such row")
                missing[(block.table, block.benchmark, why)].append(
                    f"{row.name} ({len(row.cells)} task{'s' if len(row.cells) != 1 else ''})")
                continue
            columns = row.column_stats(block.task_group)
            pairs: list[tuple[str, Stat]] = [("avg", columns["avg"])]
            if block.table == 1:
                pairs += [(t, row.task_stat(t)) for t in ref.VTAB_TASKS]
            else:
                pairs += [(g, columns[g]) for g in ref.GROUPS]
            for column, stat in pairs:
                printed = match.value(column)
                if stat.mean is None or printed is None:
                    continue
                found.append(Deviation(block.table, row.name, row.key, column, stat.mean,
                                       printed, stat.n))
    unmatched = [f"Table {table} [{BENCHMARK_NAMES.get(bench, bench)}], {why}: {', '.join(names)}"
                 for (table, bench, why), names in sorted(missing.items())]
    return found, unmatched


def diff_model(number: int, block: MeasuredBlock, table: ref.ReportedTable,
               tolerance: float) -> TexTable | None:
    """Measured minus reported (points) for the rows the paper prints; None if there are none."""
    devs, _ = deviations([block], {number: table})
    if not devs:
        return None
    columns = ["avg", *ref.VTAB_TASKS] if number == 1 else list(GROUP_LAYOUT[number])
    rows: dict[str, dict[str, Deviation]] = {}
    for d in devs:
        rows.setdefault(d.label, {})[d.column] = d
    texrows = []
    for label, cells in rows.items():
        texts = []
        for c in columns:
            d = cells.get(c)
            text = fmt_signed(d.diff if d else None, 1 if number != 2 else 2)
            texts.append(_bold(text) if d is not None and abs(d.diff) > tolerance + 1e-9 else text)
        texrows.append(TexRow(tex(label), texts))
    name = f"table{number}_diff"
    caption = (f"Table {number}: measured (VTAB-1K) minus reported accuracy, in points, for the "
               f"rows the paper prints; bold: beyond $\\pm${tolerance:g} (the check tolerance); "
               f"--: not measured. " + block.description())
    if number == 1:
        return TexTable(number=number, name=name, template="table_tasks.tex.j2", caption=caption,
                        label=f"tab:{name}", lead=["Avg. Acc."],
                        columns=[(_task_header(t), COLUMN_HEADER[ref.TASK_GROUP[t]])
                                 for t in ref.VTAB_TASKS],
                        blocks=[TexBlock(None, texrows)], wide=True)
    return TexTable(number=number, name=name, template="table_groups.tex.j2", caption=caption,
                    label=f"tab:{name}", lead=[],
                    columns=[(COLUMN_HEADER[c], "") for c in columns],
                    blocks=[TexBlock(None, texrows)])


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@cache
def environment():
    import jinja2

    # LaTeX is full of braces and percent signs: use delimiters LaTeX never has.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        block_start_string="((*", block_end_string="*))",
        variable_start_string="(((", variable_end_string=")))",
        comment_start_string="((#", comment_end_string="#))",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        autoescape=False, undefined=jinja2.StrictUndefined,
    )


def render(model: TexTable) -> str:
    return environment().get_template(model.template).render(t=model)


def table_models(records: list[dict], reported: dict[int, ref.ReportedTable] | None,
                 source: str = "both", tolerance: float = 1.0) -> list[TexTable]:
    """Every table to write for ``source`` ('reported', 'measured' or 'both'), in file order."""
    use_reported = source in ("reported", "both") and reported is not None
    use_measured = source in ("measured", "both")
    blocks = build_blocks(records, reported) if use_measured else []
    models: list[TexTable] = []
    for number in TABLE_NUMBERS:
        printed = reported.get(number) if use_reported and reported else None
        mine = [b for b in blocks if b.table == number]
        paper_block = next((b for b in mine if b.benchmark == PAPER_BENCHMARK), None)
        if printed is not None or paper_block is not None:
            models.append(table_model(number, printed, paper_block))
        if paper_block is not None and use_reported and reported and number in reported:
            diff = diff_model(number, paper_block, reported[number], tolerance)
            if diff is not None:
                models.append(diff)
        for block in mine:
            if block.benchmark != PAPER_BENCHMARK:
                models.append(table_model(number, None, block))
    return sorted(models, key=lambda m: m.name)


def unplaced(records: list[dict]) -> list[str]:
    """Labels of done VTAB-style records that feed no table, one line each."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in records:
        if r.get("status") == "done" and is_vtab_like(r) and not tables_for(r):
            counts[(r["benchmark"], r["label"], row_key(r))] += 1
    return [f"{b}: {label} ({key}, {n} record{'s' if n != 1 else ''})"
            for (b, label, key), n in sorted(counts.items())]
