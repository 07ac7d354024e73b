"""The paper's Tables 1-6 as LaTeX: reported rows from ``baselines/``, measured rows from records.

Each table's caption, columns, decimals and record rule are its entry in
:data:`heartbench.report.table_specs.TABLES`; this module lays out what they say.

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
    - score random (global), and the main variant with its scores read over the epoch
      (``score_window = "epoch"``)                       -> Table 6, beside Front
    - anything else (global weight_l2, ...)              -> no table (listed by ``tables``)
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

Rows and cells (:func:`heartbench.report.stats.build_blocks`): a row's seed set is the seeds
its widest configuration per task has in common over its tasks. Each distinct seed set of a
table's rows makes one block, widest first, with every row that has at least those seeds,
restricted to exactly them: every cell of a block has the block's seed count, and a cell's
grid configuration is chosen only among configurations that have all of them (on the mean
val200 accuracy when every record ran under the ``val`` protocol, else on the mean test
accuracy, the paper's way; the caption says which). On a twin benchmark each block is its
own table, numbered T<n> (T<n>a, T<n>b, ... for several seed sets: ``table<n>_<bench>.tex``,
then ``table<n>_<bench>_seed0.tex`` ...); a twin ablation table (2, 3, 5, 6) shows the tasks
its variant has, per task, with Avg. over those. A cell shows the mean over seeds and
"+-std" (sample std) with several seeds. Group columns are means of the group's task means
and Avg. is the mean of the three group means (the paper's way); a missing task or group is
a dash. Size = mean over tasks of ``adapter.stored_bytes`` / 2**20 (the paper's "MB", head
excluded). Reported rows carry the paper's own bold (``bold`` column of baselines/);
measured rows bold, per column, the best mean and every row whose paired difference to it
(per seed) is within that difference's sample std, and nothing with one seed
(:func:`paired_bold`), as their caption says. A twin table prints one decimal (its records
store one).
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from heartbench.report import reference as ref
from heartbench.report.budget import BUDGET_NOTE, budget_mark
from heartbench.report.latex import (
    DASH,
    TexBlock,
    TexRow,
    TexTable,
    bold,
    fmt_signed,
    fmt_size,
    stat_cell,
    tex,
)
from heartbench.report.select import (
    BENCHMARK_NAMES,
    PAPER_BENCHMARK,
    TWIN_BENCHMARKS,
    is_swin,
    ne_of,
)
from heartbench.report.stats import (
    CHANCE_MARGIN,
    Deviation,
    MeasuredBlock,
    build_blocks,
    deviations,
)
from heartbench.report.table_specs import TABLES, TableSpec, table_spec
from heartbench.report.variants import legacy_schedule

PROTOCOL_TEXT: dict[str, str] = {
    "last": "last-epoch test accuracy",
    "val": ("test accuracy of the grid point chosen on the validation split (each point"
            " trained on train800 and scored on val200), retrained on train800val200"),
    "best_of_test": "best test accuracy over the evaluated epochs (the reference code's protocol)",
}
COLUMN_HEADER: dict[str, str] = {
    "avg": "Average", "natural": "Natural", "specialized": "Specialized",
    "structured": "Structured",
}
SELECTION_TEXT: dict[str, str] = {
    "test": "the best mean test accuracy over these seeds (selection on the test set, as the "
            "paper does; these records have no val200 selection)",
    "val": "the best mean val200 accuracy over these seeds (selection on val)",
}


def seeds_text(seeds: tuple) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))})"


def is_twin(benchmark: str) -> bool:
    return benchmark in TWIN_BENCHMARKS


def display_number(number: int, block: MeasuredBlock | None) -> str:
    """The table's printed number: the paper's own, or T<n>[a, b, ...] for measured-only tables
    (the fair comparison: F, TF on a twin)."""
    shown = "F" if table_spec(number).fair else str(number)
    if block is None or block.benchmark == PAPER_BENCHMARK:
        return shown
    suffix = "abcdefghijklmnopqrstuvwxyz"[block.part] if block.parts > 1 else ""
    return f"T{shown}{suffix}"


def table_name(number: int, block: MeasuredBlock | None) -> str:
    stem = "table_fair" if table_spec(number).fair else f"table{number}"
    if block is None or block.benchmark == PAPER_BENCHMARK:
        return stem
    name = f"{stem}_{block.benchmark}"
    if block.part:
        seeds = "-".join(map(str, block.seed_set))
        name += f"_seed{seeds}" if len(block.seed_set) == 1 else f"_seeds{seeds}"
    return name


def block_title(block: MeasuredBlock) -> str:
    """The short heading of the measured rows inside a table."""
    bench = BENCHMARK_NAMES.get(block.benchmark, block.benchmark)
    return f"Measured ({bench}, {seeds_text(block.seed_set)})"


def block_description(block: MeasuredBlock) -> str:
    """The measured rows' own rule (seeds, selection, bold, spread), for the caption."""
    parts = [f"{block_title(block)}: every row shows exactly {seeds_text(block.seed_set)}; "
             "rows are the variants with records for these seeds."]
    if any(not r.own for r in block.rows):
        parts.append("Rows run with more seeds are restricted to these seeds here, their "
                     "configuration chosen again on them.")
    if block.selected_on:
        on = " or ".join(SELECTION_TEXT[s] for s in block.selected_on)
        parts.append("Where a row has several grid configurations, each task shows the one "
                     f"with {on}; only configurations with all these seeds compete.")
    parts.append(BUDGET_NOTE)
    parts.append(BOLD_RULE if block.seeds > 1 else BOLD_ONE_SEED)
    if block.seeds > 1:
        parts.append("$\\pm$: sample std over the seeds.")
    settings = row_settings(block)
    if settings:
        parts.append(f"Settings: {'; '.join(settings)}.")
    if len(block.protocols) > 1:  # rows then carry their protocol, e.g. "Heart-LoRA [val]"
        accuracy = "; ".join(f"[{p}] {PROTOCOL_TEXT.get(p, p)}" for p in block.protocols)
    else:
        accuracy = "; ".join(PROTOCOL_TEXT.get(p, p) for p in block.protocols)
    parts.append(f"Backbone {', '.join(tex(b) for b in block.backbones)}; accuracy: "
                 f"{accuracy}.")
    chance = {t: v for t, v in block.chance.items() if t in block.tasks}
    if chance:
        tasks = ", ".join(f"{tex(t)} ({v:.1f}\\%)" for t, v in chance.items())
        parts.append(f"Within {CHANCE_MARGIN:g} points of chance (100 / classes) for every row: "
                     f"{tasks}.")
    if block.recipe:
        parts.append(f"Trained off the paper's recipe (README): {tex('; '.join(block.recipe))}.")
    if any(legacy_schedule(r) for row in block.rows for c in row.cells.values() for r in c.records):
        parts.append("Some rows stepped the lr schedule one epoch ahead of the reference loops "
                     "(train.schedule\\_step next\\_epoch; docs/recipes.md).")
    if table_spec(block.table).size:
        parts.append("Size: MB = $2^{20}$ bytes of stored adapter, head excluded.")
    return " ".join(parts)


BOLD_RULE = ("Bold: per column, the best mean and every row whose paired difference to it "
             "(per seed, over these seeds) is within its spread ($|$mean difference$|$ $\\le$ its "
             "sample std): no row is called better than a bold one.")
BOLD_ONE_SEED = ("Nothing bold: one seed has no spread, so no row is called better than "
                 "another.")


def row_settings(block: MeasuredBlock) -> list[str]:
    """Per row with a grid or a search: the setting its cells show (e.g. 'ne = 3 on every
    task'), or how it was chosen."""
    out = []
    for row in block.rows:
        chosen = [c.records[0] for c in row.cells.values() if c.records]
        grids = {json.dumps(_setting(r), sort_keys=True) for r in chosen}
        search = next((r.get("search") for r in chosen if r.get("search")), None)
        if search:
            keys = ", ".join(f"{k} from {', '.join(map(str, v))}" for k, v in sorted(search.items()))
            out.append(f"{tex(row.name)}: chosen per run on val200 ({keys})")
        elif grids - {"{}"}:
            n = max(c.n_configs for c in row.cells.values())
            if len(grids) == 1:
                grid = json.loads(grids.pop())
                text = ", ".join(f"{k} = {v}" for k, v in sorted(grid.items()))
                out.append(f"{tex(row.name)}: {tex(text)} on every task"
                           + (f" (chosen among {n} configurations)" if n > 1 else ""))
            else:
                out.append(f"{tex(row.name)}: per task the best of {n} configurations "
                           "(see above)")
    return out


def _setting(record: dict) -> dict:
    """The grid point, or a Heart-LoRA run's fixed ne (Swin: ratio) from its method config."""
    if record.get("grid"):
        return record["grid"]
    if record.get("method") != "heart_lora":
        return {}
    if is_swin(record):
        return {"ratio": (record.get("method_config") or {}).get("ratio")}
    return {"ne": ne_of(record)} if ne_of(record) is not None else {}


def per_seed(row: Any, column: str, task_group: dict[str, str]) -> dict[Any, float]:
    """A row's value of ``column`` (task, group or 'avg') per seed."""
    if column in row.cells:
        return dict(row.cells[column].by_seed)
    seeds = sorted({s for c in row.cells.values() for s in c.by_seed}, key=str)
    out = {}
    for seed in seeds:
        values = {t: c.by_seed.get(seed) for t, c in row.cells.items()}
        groups = ref.group_means(values, task_group)
        value = ref.paper_average(groups) if column == "avg" else groups.get(column)
        if value is not None:
            out[seed] = value
    return out


def paired_bold(values: list[dict[Any, float]], means: list[float | None]) -> set[int]:
    """Rows to bold in one column: the best mean and every row whose paired difference to it
    is within the difference's sample std; nothing with fewer than two common seeds."""
    shown = [i for i, m in enumerate(means) if m is not None]
    if not shown:
        return set()
    best = max(shown, key=lambda i: means[i])  # type: ignore[arg-type,return-value]
    marks = set()
    for i in shown:
        common = sorted(set(values[best]) & set(values[i]), key=str)
        if len(common) < 2:
            continue
        diffs = [values[best][s] - values[i][s] for s in common]
        spread = statistics.stdev(diffs)
        if i == best or abs(statistics.fmean(diffs)) <= spread:
            marks.add(i)
    return marks if len(marks) > 0 and best in marks else set()


def _bold_if(text: str, strong: bool) -> str:
    return bold(text) if strong and text and text != DASH else (text or DASH)


def reported_task_block(table: ref.ReportedTable) -> list[TexBlock]:
    """Table 1's printed rows, in its sections, bold where the paper prints bold."""
    blocks: list[TexBlock] = []
    for row in table.rows:
        cells = [_bold_if(row.values[c], c in row.bold) for c in ("size_mb", "avg", *ref.VTAB_TASKS)]
        if not blocks or blocks[-1].title != row.section:
            blocks.append(TexBlock(row.section, []))
        blocks[-1].rows.append(TexRow(tex(row.method), cells))
    return blocks


def _delta(text: str) -> str:
    if not text:
        return ""
    arrow = "downarrow" if text.startswith("-") else "uparrow"
    return f" ($\\{arrow}$ {text.lstrip('+-')})"


def reported_group_block(table: ref.ReportedTable) -> TexBlock:
    """Tables 2-6: the printed rows, bold and differences as printed."""
    layout = table_spec(table.number).layout
    rows = [TexRow(tex(row.method),
                   [_bold_if(row.values[col], col in row.bold)
                    + _delta(row.deltas.get(f"d_{col}", "")) for col in layout])
            for row in table.rows]
    return TexBlock(None, rows)


def _measured_rows(block: MeasuredBlock, columns: list[str], decimals: int,
                   size: bool) -> TexBlock:
    """Rows of ``columns`` ('avg', group names or tasks); bold: best displayed per column."""
    stats = []
    for row in block.rows:
        groups = row.column_stats(block.task_group)
        stats.append([groups[c] if c in groups else row.task_stat(c) for c in columns])
    marks = [paired_bold([per_seed(row, c, block.task_group) for row in block.rows],
                         [r[j].mean for r in stats]) for j, c in enumerate(columns)]
    rows = []
    for i, row in enumerate(block.rows):
        cells = [stat_cell(s, decimals, i in marks[c], block.seeds) for c, s in enumerate(stats[i])]
        name = tex(row.name) + budget_mark(row.cells.values())
        rows.append(TexRow(name, [fmt_size(row.size_mib()), *cells] if size else cells))
    return TexBlock(block_title(block), rows)


def measured_task_block(block: MeasuredBlock, decimals: int = 1, size: bool = True) -> TexBlock:
    return _measured_rows(block, ["avg", *block.tasks], decimals, size)


def measured_group_block(block: MeasuredBlock, decimals: int) -> TexBlock:
    return _measured_rows(block, list(table_spec(block.table).layout), decimals, size=False)


def _group_header(group: str) -> str:
    """A group's column header; a suite's own group (tasks declared in a suite: "Custom"
    unless it names one) as given."""
    return COLUMN_HEADER.get(group) or tex(group)


def _task_header(task: str) -> str:
    return ref.TASK_HEADER.get(task, tex(task))


def _tasks_text(block: MeasuredBlock) -> str:
    groups = [f"{g} = {', '.join(tex(t) for t in block.tasks if block.task_group[t] == g)}"
              for g in ref.GROUPS if any(block.task_group[t] == g for t in block.tasks)]
    return f"Tasks: {'; '.join(groups)}."


def _caption(spec: TableSpec, reported: bool, blocks: list[MeasuredBlock]) -> str:
    number = spec.number
    parts = []
    if reported:
        parts.append(spec.caption)
        parts.append("Reported rows: the paper's numbers, and its bold, as printed.")
    twin = [b for b in blocks if b.benchmark != PAPER_BENCHMARK]
    if spec.fair:
        bench = blocks[0].benchmark if blocks else PAPER_BENCHMARK
        if bench != PAPER_BENCHMARK:
            parts.append(r"\textbf{CPU twin, not the paper's numbers.}")
        parts.append(f"{spec.caption} Benchmark: "
                     f"{tex(BENCHMARK_NAMES.get(bench, bench))}, from the stored run records.")
    elif twin:
        block = twin[0]
        what = "CPU twin" if is_twin(block.benchmark) else "measured"
        parts.append(f"\\textbf{{{what}, not the paper's numbers.}} Measured counterpart of the "
                     f"paper's Table {number} ({spec.subject}) on the "
                     f"{tex(BENCHMARK_NAMES.get(block.benchmark, block.benchmark))}, from the "
                     "stored run records.")
    elif blocks:
        parts.append("Measured rows come from the stored run records.")
    for block in blocks:
        parts.append(block_description(block))
        if block.benchmark != PAPER_BENCHMARK and not spec.per_task:
            if _group_layout(spec, block):
                parts.append("Group columns: means over the tasks of the group; Average: mean "
                             "of the group means.")
            else:
                parts.append("Columns: the tasks this table's variant has records for; Avg.: "
                             "mean of the group means over these tasks (dash without all three "
                             "groups), not comparable with Table T1's.")
            parts.append(_tasks_text(block))
    return " ".join(parts)


def _group_layout(spec: TableSpec, block: MeasuredBlock | None) -> bool:
    """Tables 2-6 in the paper's group columns: always for VTAB-1K; for a twin only without
    ``defining`` keys (Table 4), since a twin block of the others shows its variant's tasks."""
    return block is None or block.benchmark == PAPER_BENCHMARK or not spec.defining


def table_model(number: int, reported: ref.ReportedTable | None,
                blocks: list[MeasuredBlock]) -> TexTable:
    """One table: the printed rows and/or measured blocks, in the paper's layout."""
    spec = table_spec(number)
    first = blocks[0] if blocks else None
    name = table_name(number, first)
    caption = _caption(spec, reported is not None, blocks)
    # A twin's accuracies are stored with one decimal (1000 test images): never print more.
    decimals = spec.decimals if first is None or first.benchmark == PAPER_BENCHMARK else 1
    common = {"number": number, "name": name, "caption": caption, "label": f"tab:{name}",
              "display": display_number(number, first)}
    if spec.per_task or not _group_layout(spec, first):
        tasks = first.tasks if first is not None else list(ref.VTAB_TASKS)
        groups = first.task_group if first is not None else ref.TASK_GROUP
        out: list[TexBlock] = []
        if reported is not None:
            out = reported_task_block(reported)
        size = spec.size
        out += [measured_task_block(b, decimals, size) for b in blocks]
        return TexTable(template="table_tasks.tex.j2",
                        lead=["Size (MB)", "Avg. Acc."] if size else ["Avg."],
                        columns=[(_task_header(t), _group_header(groups[t])) for t in tasks],
                        blocks=out, wide=spec.per_task or len(tasks) > 6, **common)
    layout = spec.layout
    out = [reported_group_block(reported)] if reported is not None else []
    out += [measured_group_block(b, decimals) for b in blocks]
    return TexTable(template="table_groups.tex.j2", lead=[],
                    columns=[(COLUMN_HEADER[c], "") for c in layout], blocks=out, **common)


def diff_model(number: int, blocks: list[MeasuredBlock], table: ref.ReportedTable,
               tolerance: float) -> TexTable | None:
    """Measured minus reported (points) for the rows the paper prints; None if there are none."""
    devs, _ = deviations(blocks, {number: table})
    if not devs:
        return None
    spec = table_spec(number)
    columns = ["avg", *ref.VTAB_TASKS] if spec.per_task else list(spec.layout)
    rows: dict[str, dict[str, Deviation]] = {}
    for d in devs:
        rows.setdefault(d.label, {})[d.column] = d
    texrows = []
    for label, cells in rows.items():
        texts = []
        for c in columns:
            d = cells.get(c)
            text = fmt_signed(d.diff if d else None, spec.decimals)
            texts.append(bold(text) if d is not None and abs(d.diff) > tolerance + 1e-9 else text)
        texrows.append(TexRow(tex(label), texts))
    name = f"table{number}_diff"
    caption = (f"Measured (VTAB-1K) minus reported accuracy of Table {number}, in points, for "
               f"the rows the paper prints, each at its own seeds; bold: beyond "
               f"$\\pm${tolerance:g} (the check tolerance); --: not measured. "
               + " ".join(block_description(b) for b in blocks))
    common = {"number": number, "name": name, "caption": caption, "label": f"tab:{name}",
              "display": f"$\\Delta${number}", "blocks": [TexBlock(None, texrows)]}
    if spec.per_task:
        return TexTable(template="table_tasks.tex.j2", lead=["Avg. Acc."],
                        columns=[(_task_header(t), COLUMN_HEADER[ref.TASK_GROUP[t]])
                                 for t in ref.VTAB_TASKS], wide=True, **common)
    return TexTable(template="table_groups.tex.j2", lead=[],
                    columns=[(COLUMN_HEADER[c], "") for c in columns], **common)


def table_models(records: list[dict], reported: dict[int, ref.ReportedTable] | None,
                 source: str = "both", tolerance: float = 1.0) -> list[TexTable]:
    """Every table to write for ``source`` ('reported', 'measured' or 'both'), in file order."""
    use_reported = source in ("reported", "both") and reported is not None
    use_measured = source in ("measured", "both")
    blocks = build_blocks(records, reported) if use_measured else []
    models: list[TexTable] = []
    for spec in TABLES:
        number = spec.number
        printed = reported.get(number) if use_reported and reported else None
        mine = [b for b in blocks if b.table == number]
        paper = [b for b in mine if b.benchmark == PAPER_BENCHMARK]
        if printed is not None or paper:
            models.append(table_model(number, printed, paper))
        if paper and printed is not None:
            diff = diff_model(number, paper, printed, tolerance)
            if diff is not None:
                models.append(diff)
        for block in mine:
            if block.benchmark != PAPER_BENCHMARK:
                models.append(table_model(number, None, [block]))
    if use_measured:
        from heartbench.report.fair import fewshot_models

        models += fewshot_models(records)
    return sorted(models, key=lambda m: m.name)
