"""The paper's Tables 1-6 as LaTeX: reported rows from ``baselines/``, measured rows from records.

Which records feed which table (only records with status "done" and a test accuracy;
decided from the record fields alone, by :func:`heartbench.report.select.tables_for`):

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

from heartbench.report import reference as ref
from heartbench.report.latex import (
    DASH,
    TexBlock,
    TexRow,
    TexTable,
    apply_bold,
    bold,
    columns_bold,
    fmt,
    fmt_signed,
    fmt_size,
    stat_cell,
    tex,
)
from heartbench.report.select import BENCHMARK_NAMES, PAPER_BENCHMARK
from heartbench.report.stats import Deviation, MeasuredBlock, build_blocks, deviations

TABLE_NUMBERS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
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
TABLE_SUBJECT: dict[int, str] = {
    1: "accuracy per task, size and average",
    2: "1-bit vs FP32 adapters",
    3: "per-layer Heart-LoRA$^\\dagger$",
    4: "Swin backbone",
    5: "weight-L2 and grad-L2 responsiveness, per layer",
    6: "front (arbitrary) deactivation vs Heart-LoRA",
}



def block_title(block: MeasuredBlock) -> str:
    """The short heading of the measured rows inside a table."""
    bench = BENCHMARK_NAMES.get(block.benchmark, block.benchmark)
    return f"Measured ({bench}, {block.seeds} seed{'s' if block.seeds != 1 else ''})"


def block_description(block: MeasuredBlock) -> str:
    """What the measured rows are and how they were computed, for the caption."""
    parts = [f"{block_title(block)}: backbone {', '.join(tex(b) for b in block.backbones)}."]
    protocols = "; ".join(PROTOCOL_TEXT.get(p, p) for p in block.protocols)
    parts.append(f"Accuracy: {protocols}.")
    if block.selected_on:
        on = " or ".join(
            {"test": "mean test accuracy over seeds (selection on the test set, as in the paper)",
             "val": "mean validation accuracy over seeds (selection on val)"}[s]
            for s in block.selected_on)
        parts.append(f"Where a row has several grid configurations, each task shows the one "
                     f"with the best {on}.")
    if block.seeds > 1:
        parts.append("$\\pm$: sample std over seeds; a superscript gives the seed count of a "
                     "cell with fewer seeds.")
    if block.table == 1:
        parts.append("Size: MB = $2^{20}$ bytes of stored adapter, head excluded.")
    return " ".join(parts)


def reported_task_block(table: ref.ReportedTable) -> list[TexBlock]:
    """Table 1's printed rows, in its sections, best accuracy per column in bold."""
    values = [[r.values[c] for c in ("avg", *ref.VTAB_TASKS)] for r in table.rows]
    bolded = apply_bold(values, 0)
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
    marks = columns_bold(values)
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for c, col in enumerate(layout):
            text = row.values[col]
            text = bold(text) if i in marks[c] and text else (text or DASH)
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
    marks = columns_bold(texts)
    rows = []
    for i, row in enumerate(block.rows):
        cells = [stat_cell(s, decimals, i in marks[c], block.seeds) for c, s in enumerate(stats[i])]
        rows.append(TexRow(tex(row.name), [fmt_size(row.size_mib()), *cells]))
    return TexBlock(block_title(block), rows)


def measured_group_block(block: MeasuredBlock, decimals: int) -> TexBlock:
    layout = GROUP_LAYOUT[block.table]
    stats = []
    for row in block.rows:
        columns = row.column_stats(block.task_group)
        stats.append([columns[c] for c in layout])
    texts = [[fmt(s.mean, decimals) for s in r] for r in stats]
    marks = columns_bold(texts)
    rows = [TexRow(tex(row.name), [stat_cell(s, decimals, i in marks[c], block.seeds)
                                   for c, s in enumerate(stats[i])])
            for i, row in enumerate(block.rows)]
    return TexBlock(block_title(block), rows)


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
        parts.append(block_description(block))
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
            texts.append(bold(text) if d is not None and abs(d.diff) > tolerance + 1e-9 else text)
        texrows.append(TexRow(tex(label), texts))
    name = f"table{number}_diff"
    caption = (f"Table {number}: measured (VTAB-1K) minus reported accuracy, in points, for the "
               f"rows the paper prints; bold: beyond $\\pm${tolerance:g} (the check tolerance); "
               f"--: not measured. " + block_description(block))
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

