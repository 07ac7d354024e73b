"""Measured rows and blocks: seed means, group means and the paper's average, deviations.

Pure functions over records and :class:`heartbench.report.select.Cell`; no LaTeX here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from heartbench.report import reference as ref
from heartbench.report.select import (
    BENCHMARK_NAMES,
    PAPER_BENCHMARK,
    Cell,
    backbone_name,
    mean_of,
    reported_match,
    row_key,
    row_seed_set,
    select_cell,
    setting_id,
    split_known,
    std_of,
    tables_for,
    test_acc,
)
from heartbench.report.table_specs import table_spec
from heartbench.report.variants import recipe_deviations


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
    own: bool = True  # the block's seed set is the row's own (not a restriction of more seeds)
    setting: dict[str, Any] = field(default_factory=dict)  # select.run_setting of its records

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
            out[group] = Stat(means[group], std_of(present) if len(present) > 1 else None, n)  # type: ignore[arg-type]
        avg = ref.paper_average(means)
        per_seed_avg = [ref.paper_average(per_seed_groups[s]) for s in seeds]
        complete = [a for a in per_seed_avg if a is not None]
        n_avg = min((out[g].n for g in ref.GROUPS), default=0)
        out["avg"] = Stat(avg, std_of(complete) if len(complete) > 1 else None, n_avg)
        return out

    def size_mib(self) -> float | None:
        sizes = [c.stored_bytes for c in self.cells.values() if c.stored_bytes is not None]
        return mean_of(sizes) / 2**20 if sizes else None


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
    seed_set: tuple = ()  # the seeds every cell of the block has
    chance: dict[str, float] = field(default_factory=dict)  # tasks at chance for every row
    recipe: list[str] = field(default_factory=list)  # rows trained off the paper's recipe
    part: int = 0  # index among the blocks of this table and benchmark (widest seed set first)
    parts: int = 1


def task_order(tasks: dict[str, str]) -> list[str]:
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


Ident = tuple[str, str, str, str]  # (row key, label, protocol, select.setting_id)


def _rows_by_ident(recs: list[dict]) -> dict[Ident, dict[str, list[dict]]]:
    """Records per row (variant, label, protocol, run setting) and task: records of one
    label trained with other settings or another backbone (:func:`select.run_setting`) are
    another row, never seeds of one cell. One run (run_id) stored by several suites counts
    once: under its label with the most records in the table (ties: the shortest label), so
    an ablation suite's copy of a main run (e.g. "Heart-LoRA (last step)") does not repeat
    the main row."""
    def ident(r: dict) -> Ident:
        return (row_key(r), r["label"], str(r.get("eval_protocol")), setting_id(r))

    size: dict[Ident, int] = defaultdict(int)
    for r in recs:
        size[ident(r)] += 1
    home: dict[str, Ident] = {}
    for r in recs:
        best = home.get(r["run_id"])
        if best is None or (-size[ident(r)], len(r["label"]), r["label"]) < (
                -size[best], len(best[1]), best[1]):
            home[r["run_id"]] = ident(r)
    rows: dict[Ident, list[dict]] = defaultdict(list)
    placed: set[str] = set()
    for r in recs:
        if r["run_id"] in placed or ident(r) != home[r["run_id"]]:
            continue
        placed.add(r["run_id"])
        rows[ident(r)].append(r)
    by_row: dict[Ident, dict[str, list[dict]]] = {}
    for (key, label, protocol, setting), members in rows.items():
        parts = split_known(members, "weights")  # other weights (known sha256): another row
        for weights, part in parts.items():
            if len(parts) > 1:
                setting = json.dumps({**json.loads(setting), "weights sha256": weights},
                                     sort_keys=True)
            per_task: dict[str, list[dict]] = defaultdict(list)
            for r in part:
                per_task[r["task"]].append(r)
            by_row[(key, label, protocol, setting)] = per_task
    return by_row


def _seed_sort(seeds: frozenset) -> tuple:
    return (-len(seeds), sorted(map(str, seeds)))


def build_blocks(records: list[dict],
                 reported: dict[int, ref.ReportedTable] | None = None) -> list[MeasuredBlock]:
    """Every measured block (table x benchmark x seed set) the records make, in a fixed order.

    A row's seed set is :func:`select.row_seed_set`. Each distinct seed set of a table's
    rows makes one block, widest first, holding every row that has at least those seeds,
    restricted to exactly those seeds: all rows of a block have the block's seed count.
    """
    placed: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in records:
        if test_acc(r) is None:
            continue
        for table in tables_for(r):
            placed[(table, r["benchmark"])].append(r)
    blocks = []
    for (table, benchmark), recs in sorted(placed.items()):
        task_group = _block_tasks(recs, benchmark)
        by_row = _rows_by_ident(recs)
        seed_sets = {ident: row_seed_set(per_task) for ident, per_task in by_row.items()}
        part = 0
        for seeds in sorted({s for s in seed_sets.values() if s}, key=_seed_sort):
            block = _block(table, benchmark, task_group, by_row, seed_sets, seeds, reported)
            if block is None:
                continue
            block.part = part
            part += 1
            blocks.append(block)
        for block in blocks:
            if (block.table, block.benchmark) == (table, benchmark):
                block.parts = part
    return blocks


def rows_without_common_seed(records: list[dict]) -> list[str]:
    """Rows left out of every table: no seed is common to all their tasks (one line each)."""
    placed: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in records:
        if test_acc(r) is not None:
            for table in tables_for(r):
                placed[(table, r["benchmark"])].append(r)
    out = []
    for (table, benchmark), recs in sorted(placed.items()):
        for (key, label, _, _), per_task in sorted(_rows_by_ident(recs).items()):
            if not row_seed_set(per_task):
                out.append(f"Table {table} [{BENCHMARK_NAMES.get(benchmark, benchmark)}]: "
                           f"{label} ({key}): no seed common to all its tasks")
    return out


def _block(table: int, benchmark: str, task_group: dict[str, str],
           by_row: dict[Ident, dict[str, list[dict]]],
           seed_sets: dict[Ident, frozenset], seeds: frozenset,
           reported: dict[int, ref.ReportedTable] | None) -> MeasuredBlock | None:
    rows = []
    for ident, per_task in sorted(by_row.items()):
        key, label, protocol, _ = ident
        if not seed_sets[ident] >= seeds:
            continue
        cells = {t: c for t, rs in sorted(per_task.items())
                 if (c := select_cell(rs, seeds)) is not None}
        rows.append(MeasuredRow(key=key, label=label, protocol=protocol, cells=cells,
                                own=seed_sets[ident] == seeds, setting=json.loads(ident[3])))
    defining = table_spec(table).defining
    if defining and not any(r.key in defining for r in rows):
        return None
    if defining and benchmark != PAPER_BENCHMARK:
        # A twin ablation covers some tasks only: show those, per task, for every row.
        covered = {t for r in rows if r.key in defining for t in r.cells}
        task_group = {t: g for t, g in task_group.items() if t in covered}
        rows = [r for r in rows if any(t in r.cells for t in task_group)]
    rows.sort(key=_row_order(table, reported))
    _name_rows(rows)
    recs = [rec for row in rows for c in row.cells.values() for rec in c.records]
    cells = [c for row in rows for c in row.cells.values()]
    return MeasuredBlock(
        table=table, benchmark=benchmark, tasks=task_order(task_group),
        task_group=task_group, rows=rows, seeds=len(seeds),
        protocols=sorted({str(r.get("eval_protocol")) for r in recs}),
        selected_on=sorted({c.selected_on for c in cells if c.selected_on != "only"}),
        backbones=sorted({backbone_name(r) or "?" for r in recs}),
        seed_set=tuple(sorted(seeds, key=str)),
        chance=_chance_tasks(rows, recs),
        recipe=_recipe_notes(rows),
    )


def _recipe_notes(rows: list[MeasuredRow]) -> list[str]:
    """'Full: optimizer adamw (the paper: sgd)' for each row whose records trained otherwise."""
    notes = {f"{row.name or row.label}: {key} {value} (the paper: {paper})"
             for row in rows for c in row.cells.values() for r in c.records
             for key, value, paper in recipe_deviations(r)}
    return sorted(notes)


CHANCE_MARGIN = 3.0  # points: a task whose every value is this close to 100/classes is "at chance"


def at_chance(values: list[float], classes: Any) -> bool:
    """Whether every accuracy in ``values`` (points) is within CHANCE_MARGIN of 100 / classes."""
    return (isinstance(classes, int) and classes > 1 and bool(values)
            and all(abs(v - 100 / classes) <= CHANCE_MARGIN for v in values))


def _chance_tasks(rows: list[MeasuredRow], recs: list[dict]) -> dict[str, float]:
    """Tasks where every row's mean is within CHANCE_MARGIN points of chance (100 / classes)."""
    classes = {r["task"]: r.get("num_classes") for r in recs}
    out = {}
    for task, n in sorted(classes.items()):
        if at_chance([row.cells[task].mean for row in rows if task in row.cells], n):
            out[task] = 100 / n
    return out


def _block_tasks(records: list[dict], benchmark: str) -> dict[str, str]:
    """Task -> group for a block: all 19 tasks on VTAB-1K (missing ones show dashes)."""
    if benchmark == PAPER_BENCHMARK:
        return dict(ref.TASK_GROUP)
    votes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        votes[r["task"]][r["group"]] += 1
    return {t: sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for t, v in votes.items()}


def _name_rows(rows: list[MeasuredRow]) -> None:
    """Row names: the label, plus the variant, protocol or run settings (e.g. "epochs 40",
    "backbone vit_test") in which rows sharing a label differ."""
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
            extra += [f"{k} {row.setting.get(k)}" for k in sorted({k for r in same for k in r.setting})
                      if len({json.dumps(r.setting.get(k), sort_keys=True, default=str)
                              for r in same}) > 1]
            row.name = f"{row.label} [{', '.join(extra) or row.key}]"


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
            if not row.own:
                continue  # compared in the block of its own seed set
            match = None
            if block.benchmark == PAPER_BENCHMARK and table is not None:
                match = next((r for r in table.rows if reported_match(r, row.key)), None)
            if match is None:
                why = ("its tasks are not the paper's; held to the twin summary instead" if block.benchmark != PAPER_BENCHMARK
                       else "the paper prints no such row")
                missing[(block.table, block.benchmark, why)].append(
                    f"{row.name} ({len(row.cells)} task{'s' if len(row.cells) != 1 else ''})")
                continue
            columns = row.column_stats(block.task_group)
            pairs: list[tuple[str, Stat]] = [("avg", columns["avg"])]
            if table_spec(block.table).per_task:
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

