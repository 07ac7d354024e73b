"""LaTeX formatting and rendering: escaping, number formats, bold, table models, templates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from heartbench.report.stats import Stat

DASH = "--"


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


def bold(text: str) -> str:
    return f"\\textbf{{{text}}}"


def stat_cell(stat: Stat, decimals: int, strong: bool, seeds: int) -> str:
    if stat.mean is None:
        return DASH
    text = fmt(stat.mean, decimals)
    text = bold(text) if strong else text
    if stat.std is not None:
        text += f"{{\\scriptsize$\\pm${fmt(stat.std, decimals)}}}"
    if 0 < stat.n < seeds:
        text += f"$^{{{stat.n}}}$"
    return text


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
    display: str  # the number printed in the caption: "1", or "T1a" for a twin table
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


def columns_bold(rows: list[list[str]], skip: int = 0) -> list[set[int]]:
    """Per column (after ``skip`` columns), the row indices to bold."""
    if not rows:
        return []
    return [bold_set([r[c] for r in rows]) for c in range(skip, len(rows[0]))]


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

