"""The paper's Figures 2, 3, 4, 6, 7 and 8, drawn from run records alone.

One PDF and one PNG per figure and benchmark, ``fig<n>_<benchmark>.{pdf,png}``, sized for
a paper column (3.4 in wide). A figure whose records are missing is skipped with one line
naming the suites that produce them (:data:`FIGURES`, the one place that maps figures to
suites). Selection inside a figure follows the tables (:func:`select.select_cell`): per
point, the grid configuration with the best mean over seeds; the caption says so.

* Fig 2: few-shot top-1 accuracy vs shots, one panel per dataset plus the average over
  datasets (records with ``shots``); one line per label.
* Fig 3: arbitrary (front) masking: accuracy with the first ne heads masked divided by the
  ne = 0 accuracy, per task and ne (Heart-LoRA records with score "front", and ne = 0).
* Fig 4 / Fig 8: accuracy vs ne of the main Heart-LoRA variant (global Taylor), for two tasks
  (CIFAR-100 and dSprites-loc where present) and for every task.
* Fig 6: per-layer x per-head Taylor responsiveness of the q updates, three tasks (one per
  group; the paper's CIFAR-100, Camelyon and sNORB-azim where present), from
  ``record["heart"]["scores"]["taylor"]``.
* Fig 7: Taylor vs weight-L2 vs grad-L2 responsiveness maps (q) of one task (CIFAR-100
  where present).
Heat maps are min-max normalised per map (darker = more responsive).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heartbench.report import reference as ref
from heartbench.report.latex import tex
from heartbench.report.select import (
    BENCHMARK_NAMES,
    heart_key,
    is_swin,
    is_vtab_like,
    ne_of,
    select_cell,
    test_acc,
)
from heartbench.report.stats import task_order

COLUMN_WIDTH_IN = 3.4


@dataclass(frozen=True)
class FigureSpec:
    what: str
    suites: tuple[str, ...]


# Figure -> what it shows and the suites whose records it is drawn from.
FIGURES: dict[str, FigureSpec] = {
    "fig2": FigureSpec("few-shot accuracy vs shots", ("fewshot.toml", "fewshot_mini.toml")),
    "fig3": FigureSpec("front-mask accuracy ratio to ne=0",
                       ("arbitrary_mask.toml", "vtab_mini.toml")),
    "fig4": FigureSpec("accuracy vs ne (two tasks)", ("ablation_ne.toml", "vtab_mini.toml")),
    "fig6": FigureSpec("Taylor responsiveness maps (three tasks)",
                       ("vtab1k.toml", "vtab_mini.toml")),
    "fig7": FigureSpec("Taylor vs weight-L2 vs grad-L2 maps",
                       ("vtab1k.toml", "score_variants.toml", "vtab_mini.toml")),
    "fig8": FigureSpec("accuracy vs ne (every task)", ("ablation_ne.toml", "vtab_mini.toml")),
}
PAPER_FIG4_TASKS = ("cifar", "dsprites_loc")
PAPER_FIG6_TASKS = ("cifar", "patch_camelyon", "smallnorb_azi")
PAPER_FIG7_TASK = "cifar"
SCORE_NAMES = {"taylor": "Taylor", "weight_l2": "weight L2", "grad_l2": "grad L2"}
SELECTION_NOTE = "Each point: the grid configuration with the best mean test accuracy over seeds."


@dataclass(frozen=True)
class Figure:
    stem: str  # file name without suffix
    caption: str

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
        if r.get("status") == "done" and test_acc(r) is not None and keep(r):
            out[r["benchmark"]].append(r)
    return dict(sorted(out.items()))


def _tasks(records: list[dict]) -> list[str]:
    return task_order({r["task"]: r.get("group") or "" for r in records})


def _bench(benchmark: str) -> str:
    """The benchmark's name for a (LaTeX) caption."""
    return tex(BENCHMARK_NAMES.get(benchmark, benchmark))


# ---------------------------------------------------------------------------
# Figure 2: few-shot
# ---------------------------------------------------------------------------
def fig2(records: list[dict], out: Path) -> list[Figure]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    made = []
    for benchmark, recs in _by_benchmark(records, lambda r: r.get("shots") is not None).items():
        cells: dict[tuple[str, str, int], float] = {}
        groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
        for r in recs:
            groups[(r["label"], r["task"], int(r["shots"]))].append(r)
        for key, rs in groups.items():
            cell = select_cell(rs)
            if cell is not None:
                cells[key] = cell.mean
        datasets = sorted({k[1] for k in cells})
        labels = sorted({k[0] for k in cells})
        shots = sorted({k[2] for k in cells})
        panels = [*datasets, "Average"]
        ncols = 2
        nrows = math.ceil(len(panels) / ncols)
        palette = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
        with plt.rc_context(_rc()), sns.axes_style("whitegrid"):
            fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN, 1.3 * nrows + 0.35),
                                     squeeze=False, layout="constrained")
            for i, panel in enumerate(panels):
                ax = axes[i // ncols][i % ncols]
                for label in labels:
                    xs, ys = [], []
                    for s in shots:
                        if panel == "Average":
                            values = [cells.get((label, d, s)) for d in datasets]
                            value = (math.fsum(values) / len(values)  # type: ignore[arg-type]
                                     if all(v is not None for v in values) else None)
                        else:
                            value = cells.get((label, panel, s))
                        if value is not None:
                            xs.append(s)
                            ys.append(value)
                    if xs:
                        ax.plot(xs, ys, marker="o", color=palette[label], label=label)
                ax.set_xscale("log", base=2)
                ax.set_xticks(shots, [str(s) for s in shots])
                ax.minorticks_off()
                ax.set_title(panel)
                if i % ncols == 0:
                    ax.set_ylabel("top-1 acc. (%)")
                if i // ncols == nrows - 1 or i + ncols >= len(panels):
                    ax.set_xlabel("shots per class")
            for j in range(len(panels), nrows * ncols):
                axes[j // ncols][j % ncols].set_visible(False)
            handles = [plt.Line2D([], [], color=palette[lb], marker="o", label=lb) for lb in labels]
            fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(labels)),
                       frameon=False)
            stem = f"fig2_{benchmark}"
            _save(fig, out, stem)
            plt.close(fig)
        made.append(Figure(stem, f"Few-shot learning on {_bench(benchmark)}: top-1 accuracy vs "
                                 f"shots per class, mean over seeds. {SELECTION_NOTE}"))
    return made


# ---------------------------------------------------------------------------
# Figure 3: front masking ratio
# ---------------------------------------------------------------------------
def _per_task_ne(recs: list[dict]) -> dict[tuple[str, int], Any]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in recs:
        ne = ne_of(r)
        if ne is not None:
            groups[(r["task"], ne)].append(r)
    return {k: c for k, rs in groups.items() if (c := select_cell(rs)) is not None}


def fig3(records: list[dict], out: Path) -> list[Figure]:
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    def keep(r: dict) -> bool:
        return (r["method"] == "heart_lora" and is_vtab_like(r) and not is_swin(r)
                and (heart_key(r) == "front" or ne_of(r) == 0))

    made = []
    for benchmark, recs in _by_benchmark(records, keep).items():
        # ne = 0 masks nothing: prefer front runs, fall back to any ne = 0 Heart-LoRA run.
        fronts = [r for r in recs if heart_key(r) == "front"]
        cells = _per_task_ne(fronts)
        base_any = _per_task_ne([r for r in recs if ne_of(r) == 0])
        tasks = [t for t in _tasks(recs) if (t, 0) in cells or (t, 0) in base_any]
        nes = sorted({ne for (_, ne) in cells if ne > 0})
        if not tasks or not nes:
            continue
        matrix = np.full((len(tasks), len(nes)), np.nan)
        for i, t in enumerate(tasks):
            base = (cells.get((t, 0)) or base_any[(t, 0)]).mean
            for j, ne in enumerate(nes):
                if (t, ne) in cells and base:
                    matrix[i, j] = cells[(t, ne)].mean / base
        if np.isnan(matrix).all():
            continue
        spread = max(float(np.nanmax(np.abs(matrix - 1.0))), 0.01)
        with plt.rc_context(_rc()):
            fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 0.2 * len(tasks) + 0.9),
                                   layout="constrained")
            with warnings.catch_warnings():
                # seaborn 0.13 calls a matplotlib method that 3.11 marks for deprecation.
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                sns.heatmap(matrix, ax=ax, annot=True, fmt=".3f", cmap="RdBu", center=1.0,
                            vmin=1 - spread, vmax=1 + spread, linewidths=0.4,
                            annot_kws={"fontsize": 6},
                            xticklabels=[f"ne={ne}" for ne in nes],
                            yticklabels=[_label(t) for t in tasks],
                            cbar_kws={"label": "accuracy / accuracy at ne=0"})
            ax.set_xlabel("front heads masked")
            ax.set_ylabel("task")
            ax.tick_params(axis="y", rotation=0)
            stem = f"fig3_{benchmark}"
            _save(fig, out, stem)
            plt.close(fig)
        made.append(Figure(stem, f"Arbitrary deactivation on {_bench(benchmark)}: accuracy with "
                                 "the first ne heads' updates masked, divided by the ne=0 "
                                 f"accuracy (mean over seeds). {SELECTION_NOTE}"))
    return made


# ---------------------------------------------------------------------------
# Figures 4 and 8: accuracy vs ne
# ---------------------------------------------------------------------------
def _ne_curves(records: list[dict]) -> dict[str, tuple[list[dict], dict[tuple[str, int], Any]]]:
    def keep(r: dict) -> bool:
        return heart_key(r) == "heart_lora" and is_vtab_like(r) and not is_swin(r)

    out = {}
    for benchmark, recs in _by_benchmark(records, keep).items():
        cells = _per_task_ne(recs)
        if any(len({ne for (t2, ne) in cells if t2 == t}) > 1 for (t, _) in cells):
            out[benchmark] = (recs, cells)
    return out


def _draw_ne(ax: Any, cells: dict[tuple[str, int], Any], task: str) -> None:
    points = sorted((ne, c) for (t, ne), c in cells.items() if t == task)
    xs = [ne for ne, _ in points]
    ys = [c.mean for _, c in points]
    errs = [c.std or 0.0 for _, c in points]
    ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", capsize=1.5,
                color="#1f5fa8")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.set_title(_label(task))


def _ne_figure(records: list[dict], out: Path, number: int) -> list[Figure]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    made = []
    for benchmark, (recs, cells) in _ne_curves(records).items():
        curves = [t for t in _tasks(recs) if len({ne for (t2, ne) in cells if t2 == t}) > 1]
        if number == 4:
            paper = [t for t in PAPER_FIG4_TASKS if t in curves]
            curves = paper if len(paper) == 2 else curves[:2]
        ncols = 2 if number == 4 else 3
        nrows = math.ceil(len(curves) / ncols)
        with plt.rc_context(_rc()), sns.axes_style("whitegrid"):
            fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                     figsize=(COLUMN_WIDTH_IN, 1.2 * nrows + 0.2))
            for i, task in enumerate(curves):
                ax = axes[i // ncols][i % ncols]
                _draw_ne(ax, cells, task)
                if i % ncols == 0:
                    ax.set_ylabel("acc. (%)")
                if i + ncols >= len(curves):
                    ax.set_xlabel("ne")
            for j in range(len(curves), nrows * ncols):
                axes[j // ncols][j % ncols].set_visible(False)
            stem = f"fig{number}_{benchmark}"
            _save(fig, out, stem)
            plt.close(fig)
        which = "two tasks" if number == 4 else "every task"
        made.append(Figure(stem, f"Effect of ne on {_bench(benchmark)} ({which}): Heart-LoRA "
                                 f"accuracy vs the number of masked heads, mean $\\pm$ std over "
                                 f"seeds. {SELECTION_NOTE}"))
    return made


def fig4(records: list[dict], out: Path) -> list[Figure]:
    return _ne_figure(records, out, 4)


def fig8(records: list[dict], out: Path) -> list[Figure]:
    return _ne_figure(records, out, 8)


# ---------------------------------------------------------------------------
# Figures 6 and 7: responsiveness maps
# ---------------------------------------------------------------------------
def _score_map(record: dict, score: str) -> Any | None:
    """layers x heads of one score for the q target (None when the record lacks it)."""
    import numpy as np

    heart = record.get("heart") or {}
    targets = heart.get("targets") or []
    scores = (heart.get("scores") or {}).get(score)
    if "q" not in targets or not scores:
        return None
    q = targets.index("q")
    try:
        rows = [[float("nan") if v is None else float(v) for v in layer[q]] for layer in scores]
    except (TypeError, IndexError, ValueError):
        return None
    if len({len(r) for r in rows}) != 1:
        return None
    return np.array(rows, dtype=float)


def _normalise(matrix: Any) -> Any:
    import numpy as np

    low, high = np.nanmin(matrix), np.nanmax(matrix)
    return (matrix - low) / (high - low) if high > low else np.zeros_like(matrix)


def _map_records(records: list[dict], scores: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """benchmark -> task -> the record whose maps are drawn (main variant first, then seed, id)."""
    def keep(r: dict) -> bool:
        return (is_vtab_like(r) and not is_swin(r)
                and all(_score_map(r, s) is not None for s in scores))

    out: dict[str, dict[str, dict]] = {}
    for benchmark, recs in _by_benchmark(records, keep).items():
        chosen: dict[str, dict] = {}
        for r in sorted(recs, key=lambda r: (heart_key(r) != "heart_lora", str(r["seed"]),
                                             r["run_id"])):
            chosen.setdefault(r["task"], r)
        out[benchmark] = chosen
    return out


def _heatmaps(panels: list[tuple[str, Any]], out: Path, stem: str, title: str = "") -> None:
    import matplotlib.pyplot as plt

    with plt.rc_context(_rc()):
        fig, axes = plt.subplots(1, len(panels), figsize=(COLUMN_WIDTH_IN, 1.75),
                                 sharey=True, squeeze=False, layout="constrained")
        image = None
        for ax, (panel_title, matrix) in zip(axes[0], panels, strict=True):
            image = ax.imshow(_normalise(matrix), origin="lower", cmap="Blues", vmin=0, vmax=1,
                              aspect="auto", interpolation="nearest")
            layers, heads = matrix.shape
            ax.set_title(panel_title)
            ax.set_xlabel("head")
            ax.set_xticks(range(0, heads, max(1, heads // 4)))
            ax.set_yticks(range(0, layers, max(1, layers // 6)))
        axes[0][0].set_ylabel("layer")
        bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.05, pad=0.02)
        if title:
            fig.suptitle(title, fontsize=7)
        bar.set_label("responsiveness (normalised)")
        bar.ax.tick_params(labelsize=5)
        _save(fig, out, stem)
        plt.close(fig)


def fig6(records: list[dict], out: Path) -> list[Figure]:
    made = []
    for benchmark, chosen in _map_records(records, ("taylor",)).items():
        tasks = [t for t in PAPER_FIG6_TASKS if t in chosen]
        if len(tasks) < 3:
            order = _tasks(list(chosen.values()))
            firsts = []
            for group in ref.GROUPS:
                firsts += [t for t in order if chosen[t].get("group") == group][:1]
            tasks = (firsts + [t for t in order if t not in firsts])[:3]
        panels = [(_label(t), _score_map(chosen[t], "taylor")) for t in tasks]
        stem = f"fig6_{benchmark}"
        _heatmaps(panels, out, stem)
        made.append(Figure(stem, f"Head-level responsiveness (Taylor score of the q updates) on "
                                 f"{_bench(benchmark)}, per layer and head, normalised per map; "
                                 f"darker = more responsive."))
    return made


def fig7(records: list[dict], out: Path) -> list[Figure]:
    made = []
    scores = ("taylor", "weight_l2", "grad_l2")
    for benchmark, chosen in _map_records(records, scores).items():
        task = PAPER_FIG7_TASK if PAPER_FIG7_TASK in chosen else _tasks(list(chosen.values()))[0]
        panels = [(SCORE_NAMES[s], _score_map(chosen[task], s)) for s in scores]
        stem = f"fig7_{benchmark}"
        _heatmaps(panels, out, stem, title=f"{_label(task)}: responsiveness of the q updates")
        made.append(Figure(stem, f"Responsiveness of the q updates on {_bench(benchmark)} task "
                                 f"{tex(_label(task))} by Taylor score, weight L2 norm and gradient "
                                 "L2 norm, normalised per map."))
    return made


BUILDERS: dict[str, Callable[[list[dict], Path], list[Figure]]] = {
    "fig2": fig2, "fig3": fig3, "fig4": fig4, "fig6": fig6, "fig7": fig7, "fig8": fig8,
}


def build_figures(records: list[dict], out: Path) -> tuple[list[Figure], list[str]]:
    """Draw every figure the records allow; return them and one line per skipped figure."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    made: list[Figure] = []
    skipped: list[str] = []
    for name, builder in BUILDERS.items():
        figures = builder(records, out)
        if figures:
            made.extend(figures)
        else:
            spec = FIGURES[name]
            skipped.append(f"{name} ({spec.what}) skipped: no records for it; run suite "
                           f"{' or '.join(spec.suites)}")
    return made, skipped
