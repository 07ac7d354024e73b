"""What every figure of :mod:`heartbench.report.figures` (and ``figure5``) shares: the
column size and style, the twin mark and caption, saving reproducibly, task labels."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heartbench.report import reference as ref
from heartbench.report.latex import tex
from heartbench.report.select import BENCHMARK_NAMES, test_acc
from heartbench.report.stats import task_order
from heartbench.report.variants import is_fair

COLUMN_WIDTH_IN = 3.4
PAPER_BENCHMARKS = ("vtab1k", "fewshot")


@dataclass(frozen=True)
class Figure:
    stem: str  # file name without suffix
    caption: str
    number: str = ""  # printed number: the paper's ("4"), or "T4" for twin data
    wide: bool = False  # spans the page (Figure 5) instead of a column

    @property
    def file(self) -> str:
        return f"{self.stem}.pdf"


def _rc() -> dict[str, Any]:
    return {
        "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6,
        "ytick.labelsize": 6, "legend.fontsize": 6, "lines.linewidth": 1.0,
        "lines.markersize": 3, "axes.linewidth": 0.6, "pdf.fonttype": 42,
        "svg.hashsalt": "heartbench", "path.simplify": False,
    }


def twin_note(benchmark: str) -> str:
    """The line every figure from twin (non-paper) data carries in the image itself."""
    if benchmark in PAPER_BENCHMARKS:
        return ""
    return f"{BENCHMARK_NAMES.get(benchmark, benchmark)}: CPU-twin data, not the paper's"


def _mark(fig: Any, benchmark: str, title: str = "") -> None:
    note = twin_note(benchmark)
    text = "\n".join(t for t in (title, note) if t)
    if text:
        fig.suptitle(text, fontsize=6.5, color="black" if not note else "#8b0000")


def fig_caption(number: int, benchmark: str, text: str) -> tuple[str, str]:
    """(printed number, caption): twin figures are numbered T<n> and say so first."""
    if benchmark in PAPER_BENCHMARKS:
        return str(number), text
    return f"T{number}", (f"\\textbf{{CPU twin, not the paper's data}} (counterpart of the "
                          f"paper's Figure {number}). {text}")


def _save(fig: Any, out: Path, stem: str) -> None:
    # No dates or versions in the files: a rebuild gives the same bytes.
    fig.savefig(out / f"{stem}.pdf", metadata={"CreationDate": None, "ModDate": None,
                                               "Producer": None, "Creator": None})
    fig.savefig(out / f"{stem}.png", dpi=200, metadata={"Software": None})


def _label(task: str) -> str:
    return ref.TASK_HEADER.get(task, task)


def _by_benchmark(records: list[dict], keep: Callable[[dict], bool]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        # Fair-protocol records are tables only (report.fair, Table F).
        if r.get("status") == "done" and test_acc(r) is not None and not is_fair(r) and keep(r):
            out[r["benchmark"]].append(r)
    return dict(sorted(out.items()))


def _tasks(records: list[dict]) -> list[str]:
    return task_order({r["task"]: r.get("group") or "" for r in records})


def _bench(benchmark: str) -> str:
    """The benchmark's name for a (LaTeX) caption."""
    return tex(BENCHMARK_NAMES.get(benchmark, benchmark))
