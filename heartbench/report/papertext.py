"""The paper's own text against ``baselines/``: every printed number, bold mark and printed
difference of Tables 1-6, to the printed digit.

The paper's text (``heart-lora-paper.md``, a Markdown conversion of the PDF) prints each table
as tab-separated lines followed by its caption line ``Table <n>. ...``; a cell is the number
as printed, ``<b>..</b>`` around it when bold, and ``( <arrow> x)`` after it for a printed
difference. Rows are matched on the printed method name (``NOAH <sup>†</sup>`` = ``NOAH†``).
By default the text is looked for beside the checkout, ``../shared/paper/heart-lora-paper.md``
(:func:`default_paper_text`).

Pure Python: ``check`` imports it fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from heartbench.report import reference as ref
from heartbench.report.table_specs import table_spec

PAPER_TEXT_NAME = "heart-lora-paper.md"
HEADER_COLUMNS: dict[str, str] = {"Average": "avg", "Natural": "natural",
                                  "Specialized": "specialized", "Structured": "structured",
                                  "Size (MB)": "size_mb", "Avg. Acc.": "avg",
                                  **{v: k for k, v in ref.TASK_HEADER.items()}}
_CAPTION = re.compile(r"^Table (\d+)\.")
_DELTA = re.compile(r"\(\s*(?:↑|↓|\$\\uparrow\$|\$\\downarrow\$)\s*([0-9.]+)\s*\)")


@dataclass(frozen=True)
class PrintedCell:
    value: str
    bold: bool
    delta: str  # signed, e.g. "+0.4" / "-0.5", "" when none printed


def default_paper_text() -> Path:
    """``../shared/paper/heart-lora-paper.md`` relative to the checkout."""
    return ref.default_baselines_dir().parents[1] / "shared" / "paper" / PAPER_TEXT_NAME


def _name(text: str) -> str:
    return re.sub(r"\s*<sup>†</sup>", "†", text).strip()


def _cell(text: str) -> PrintedCell:
    delta = ""
    found = _DELTA.search(text)
    if found:
        sign = "-" if ("↓" in found.group(0) or "downarrow" in found.group(0)) else "+"
        delta = sign + found.group(1)
        text = text[:found.start()]
    bold = "<b>" in text
    value = re.sub(r"</?b>", "", text).strip()
    return PrintedCell(value, bold, delta)


def parse_tables(text: str) -> dict[int, dict[str, dict[str, PrintedCell]]]:
    """table number -> printed row name -> column -> cell, from the paper's text."""
    lines = text.splitlines()
    out: dict[int, dict[str, dict[str, PrintedCell]]] = {}
    for index, line in enumerate(lines):
        found = _CAPTION.match(line)
        if not found:
            continue
        block: list[str] = []
        j = index - 1
        while j >= 0 and (not lines[j].strip() or "\t" in lines[j]) and not (
                block and not lines[j].strip()):
            if lines[j].strip():
                block.insert(0, lines[j])
            j -= 1
        header = next((b for b in block if any(h in b.split("\t") for h in
                                                ("Average", "Avg. Acc."))), None)
        if header is None:
            continue
        columns = [HEADER_COLUMNS.get(h.strip(), "") for h in header.split("\t")]
        if "Size (MB)" in header:  # Table 1: the task headers are on the next line
            tasks = block[block.index(header) + 1].split("\t")
            columns = [HEADER_COLUMNS.get(h.strip(), c) for h, c in
                       zip(tasks, columns + [""] * (len(tasks) - len(columns)))]
        rows: dict[str, dict[str, PrintedCell]] = {}
        for row in block[block.index(header) + 1:]:
            cells = row.split("\t")
            numbers = [c for c in cells[1:] if c.strip()]
            if not numbers or not cells[0].strip():
                continue  # a section line ("PET methods") or Table 1's task headers
            rows[_name(cells[0])] = {c: _cell(v) for c, v in zip(columns, cells)
                                     if c and v.strip()}
        out[int(found.group(1))] = rows
    return out


def compare(reported: dict[int, ref.ReportedTable], text: str) -> tuple[int, list[str]]:
    """(cells compared, one line per disagreement naming table, row and column)."""
    printed = parse_tables(text)
    problems: list[str] = []
    compared = 0
    for number, table in sorted(reported.items()):
        rows = printed.get(number)
        if rows is None:
            problems.append(f"Table {number}: not found in the paper's text")
            continue
        deltas = not table_spec(number).per_task
        seen = set()
        for row in table.rows:
            name = _name(row.printed)
            cells = rows.get(name)
            where = f"Table {number} {row.method} ({table.path.name})"
            if cells is None:
                problems.append(f"{where}: the paper prints no row {name!r}")
                continue
            seen.add(name)
            for column in table.columns:
                cell = cells.get(column, PrintedCell("", False, ""))
                compared += 1
                mine = row.values.get(column, "")
                if cell.value != mine:
                    problems.append(f"{where} {column}: {mine or 'empty'} in baselines, the "
                                    f"paper prints {cell.value or 'nothing'}")
                if cell.bold != (column in row.bold):
                    problems.append(f"{where} {column}: bold {column in row.bold} in baselines,"
                                    f" the paper prints it {'bold' if cell.bold else 'plain'}")
                if deltas and cell.delta != row.deltas.get(f"d_{column}", ""):
                    problems.append(f"{where} {column}: difference "
                                    f"{row.deltas.get(f'd_{column}', '') or 'none'} in "
                                    f"baselines, the paper prints {cell.delta or 'none'}")
        for name in sorted(set(rows) - seen):
            problems.append(f"Table {number}: the paper's row {name!r} is not in "
                            f"{table.path.name}")
    return compared, problems
