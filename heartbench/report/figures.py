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
Twin figures (any benchmark but the paper's vtab1k / fewshot) are numbered T<n> and say in
the image that they show CPU-twin data. Curves use one seed set per curve (the seeds every
point has) with the std over them; heat maps of signed scores put zero at the middle of a
map whose lightness rises monotonically (readable in grey scale), non-negative ones min-max
per map. Curves: one marker and line style per series, never colour alone.
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
from heartbench.report.budget import BUDGET_NOTE, budget_text
from heartbench.report.latex import tex
from heartbench.report.plotting import (  # noqa: F401 (Figure, twin_note: this module's API)
    COLUMN_WIDTH_IN,
    Figure,
    _bench,
    _by_benchmark,
    _label,
    _mark,
    _rc,
    _save,
    _tasks,
    fig_caption,
    twin_note,
)
from heartbench.report.select import (
    heart_key,
    is_fixed_ne_heart,
    is_swin,
    is_vtab_like,
    ne_of,
    row_seed_set,
    select_cell,
    test_acc,
)
from heartbench.report.stats import at_chance


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
SELECTION_NOTE = ("Each point: among the grid configurations with all of the curve's seeds, the one "
                  "with the best mean test accuracy over them.")
ONE_CONFIG_NOTE = "Each point is one configuration (no grid to choose from)."
# Series told apart in print and grey scale: each label its own marker, line style and a
# colour of its own lightness (Okabe-Ito hues, colour-blind safe), never colour alone.
SERIES_STYLES: tuple[tuple[str, str, Any, bool], ...] = (
    ("#000000", "o", "-", True), ("#0072B2", "s", "--", False), ("#E69F00", "^", ":", True),
    ("#009E73", "D", "-.", False), ("#CC79A7", "v", (0, (5, 1)), True),
    ("#D55E00", "P", (0, (1, 1)), False), ("#56B4E9", "X", (0, (3, 1, 1, 1)), True),
)
# Colour-bar tick labels: drawn 3.4 in wide, placed at \columnwidth, so 7.6 pt stays >= 7 pt
# down to a 3.17 in column (article's twocolumn: 3.18 in; IEEE 3.5, ACM 3.33, CVPR 3.25).
COLOURBAR_TICK_PT = 7.6
# Signed scores: lightness rises monotonically from the most negative to the most positive
# (a red-blue diverging map loses the sign in grey scale: both ends are dark).
SIGNED_MAP = "cividis"


def selection_note(cells: list[Any]) -> str:
    """The caption's word on configurations: a choice only where some point had several."""
    return SELECTION_NOTE if any(c.n_configs > 1 for c in cells) else ONE_CONFIG_NOTE


def series_style(index: int) -> dict[str, Any]:
    colour, marker, line, filled = SERIES_STYLES[index % len(SERIES_STYLES)]
    return {"color": colour, "marker": marker, "linestyle": line,
            "markerfacecolor": colour if filled else "white", "markeredgecolor": colour}


def curve_cells(groups: dict[Any, list[dict]]) -> tuple[dict[Any, Any], frozenset]:
    """One seed policy per curve: every point on the seeds all points have."""
    seeds = row_seed_set(groups)
    cells = {k: c for k, rs in groups.items() if (c := select_cell(rs, seeds or None)) is not None}
    return cells, seeds


def _seeds_text(seeds: frozenset) -> str:
    ordered = sorted(seeds, key=str)
    return f"seed {ordered[0]}" if len(ordered) == 1 else f"seeds {', '.join(map(str, ordered))}"


def _chance(records: list[dict], tasks: list[str], values: dict[str, list[float]]) -> list[str]:
    """Tasks whose every shown accuracy is at chance (stats.at_chance)."""
    classes = {r["task"]: r.get("num_classes") for r in records}
    out = []
    for t in tasks:
        n = classes.get(t)
        if at_chance(values.get(t) or [], n):
            out.append(f"{tex(_label(t))} ({100 / n:.0f}\\%)")
    return out


# ---------------------------------------------------------------------------
# Figure 2: few-shot
# ---------------------------------------------------------------------------
def _fewshot_curves(recs: list[dict]) -> dict[tuple[str, str], tuple[dict[int, Any], frozenset]]:
    """(label, dataset) -> (shots -> cell, the curve's seeds)."""
    groups: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        groups[(r["label"], r["task"])][int(r["shots"])].append(r)
    return {k: curve_cells(dict(v)) for k, v in sorted(groups.items())}


def _average_curve(curves: list[dict[int, Any]], shots: list[int]) -> tuple[list, list, list]:
    """Mean over datasets per shot, and the std over seeds of the per-seed dataset means."""
    import numpy as np

    xs, ys, errs = [], [], []
    for s in shots:
        cells = [c.get(s) for c in curves]
        if any(c is None for c in cells):
            continue
        seeds = set.intersection(*(set(c.by_seed) for c in cells))
        per_seed = [float(np.mean([c.by_seed[seed] for c in cells])) for seed in seeds]
        xs.append(s)
        ys.append(float(np.mean([c.mean for c in cells])))
        errs.append(float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0)
    return xs, ys, errs


def fig2(records: list[dict], out: Path) -> list[Figure]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    made = []
    for benchmark, recs in _by_benchmark(records, lambda r: r.get("shots") is not None).items():
        curves = _fewshot_curves(recs)
        datasets = sorted({d for (_, d) in curves})
        labels = sorted({lb for (lb, _) in curves})
        shots = sorted({s for cells, _ in curves.values() for s in cells})
        seed_sets = {seeds for _, seeds in curves.values()}
        panels = [*datasets, "Average"]
        ncols = 2
        nrows = math.ceil(len(panels) / ncols)
        styles = {label: series_style(i) for i, label in enumerate(labels)}
        with plt.rc_context(_rc()), sns.axes_style("whitegrid"):
            fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN, 1.3 * nrows + 0.6),
                                     squeeze=False, layout="constrained")
            for i, panel in enumerate(panels):
                ax = axes[i // ncols][i % ncols]
                for label in labels:
                    if panel == "Average":
                        xs, ys, errs = _average_curve(
                            [curves[(label, d)][0] for d in datasets if (label, d) in curves], shots)
                    else:
                        cells = curves.get((label, panel), ({}, None))[0]
                        xs = sorted(cells)
                        ys = [cells[x].mean for x in xs]
                        errs = [cells[x].std or 0.0 for x in xs]
                    if xs:
                        # Dodge the labels along the log axis so error bars stay apart, thin
                        # bars under the means' markers: the spread never hides a mean.
                        dodge = 2 ** (0.11 * (labels.index(label) - (len(labels) - 1) / 2))
                        ax.errorbar([x * dodge for x in xs], ys, yerr=errs if any(errs) else None,
                                    capsize=1.2, elinewidth=0.6, markersize=3.5, label=label,
                                    **styles[label])
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
            budgets = {lb: budget_text(c for (label, _), (cells, _) in curves.items()
                                       if label == lb for c in cells.values()) for lb in labels}
            handles = [plt.Line2D([], [], label=f"{lb} [{budgets[lb]}]", **styles[lb])
                       for lb in labels]
            fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(labels)),
                       frameon=False)
            _mark(fig, benchmark)
            stem = f"fig2_{benchmark}"
            _save(fig, out, stem)
            plt.close(fig)
        seeds = " / ".join(_seeds_text(s) for s in sorted(seed_sets, key=lambda x: sorted(map(str, x))))
        note = selection_note([c for cells, _ in curves.values() for c in cells.values()])
        number, caption = fig_caption(2, benchmark, (
            f"Few-shot learning on {_bench(benchmark)}: top-1 accuracy vs shots per class; each "
            f"method its own marker and line style. Each point: mean over {seeds} (every point "
            f"of a curve on the same seeds), error bars: sample std over them; Average: mean "
            f"over datasets, error bars: std over seeds of the per-seed dataset mean. Points of "
            f"one shot count are spread sideways so their bars stay apart. {note} {BUDGET_NOTE}"))
        made.append(Figure(stem, caption, number))
    return made


# ---------------------------------------------------------------------------
# Figure 3: front masking ratio
# ---------------------------------------------------------------------------
def _per_task_ne(recs: list[dict]) -> dict[tuple[str, int], Any]:
    """(task, ne) -> cell, each task's points on the seeds all its ne values have."""
    groups: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        ne = ne_of(r)
        if ne is not None:
            groups[r["task"]][ne].append(r)
    out = {}
    for task, by_ne in groups.items():
        cells, _ = curve_cells(dict(by_ne))
        out.update({(task, ne): c for ne, c in cells.items()})
    return out


def fig3(records: list[dict], out: Path) -> list[Figure]:
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    def keep(r: dict) -> bool:
        return (r["method"] == "heart_lora" and is_vtab_like(r) and not is_swin(r)
                and not r.get("search")  # a run that chose its ne on val is no fixed-ne point
                and (heart_key(r) == "front" or (heart_key(r) == "heart_lora" and ne_of(r) == 0)))

    made = []
    for benchmark, recs in _by_benchmark(records, keep).items():
        # ne = 0 masks nothing: a front run at ne = 0 if there is one, else the main variant's.
        fronts = [r for r in recs if heart_key(r) == "front"]
        bases = {r["task"] for r in fronts if ne_of(r) == 0}
        used = fronts + [r for r in recs if heart_key(r) != "front" and r["task"] not in bases]
        cells = _per_task_ne(used)
        tasks = [t for t in _tasks(used) if (t, 0) in cells]
        nes = sorted({ne for (t, ne) in cells if ne > 0 and t in tasks})
        if not tasks or not nes:
            continue
        matrix = np.full((len(tasks), len(nes)), np.nan)
        for i, t in enumerate(tasks):
            base = cells[(t, 0)].mean
            for j, ne in enumerate(nes):
                if (t, ne) in cells and base:
                    matrix[i, j] = cells[(t, ne)].mean / base
        if np.isnan(matrix).all():
            continue
        seeds = sorted({frozenset(c.by_seed) for (t, _), c in cells.items() if t in tasks},
                       key=lambda x: sorted(map(str, x)))
        spread = max(float(np.nanmax(np.abs(matrix - 1.0))), 0.01)
        with plt.rc_context(_rc()):
            fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 0.2 * len(tasks) + 1.2),
                                   layout="constrained")
            with warnings.catch_warnings():
                # seaborn 0.13 calls a matplotlib method that 3.11 marks for deprecation.
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                sns.heatmap(matrix, ax=ax, annot=True, fmt=".3f", cmap="RdBu", center=1.0,
                            vmin=1 - spread, vmax=1 + spread, linewidths=0.4,
                            annot_kws={"fontsize": 6},
                            xticklabels=[f"ne={ne}" for ne in nes],
                            yticklabels=[_label(t) for t in tasks],
                            cbar_kws={"label": "acc. / acc. at ne=0"})
            ax.set_xlabel("front heads masked")
            ax.set_ylabel("task")
            ax.tick_params(axis="y", rotation=0)
            _mark(fig, benchmark)
            stem = f"fig3_{benchmark}"
            _save(fig, out, stem)
            plt.close(fig)
        number, caption = fig_caption(3, benchmark, (
            f"Arbitrary deactivation on {_bench(benchmark)}: accuracy with the first ne heads' "
            f"updates masked (Front), divided by the ne=0 accuracy, on "
            f"{' / '.join(_seeds_text(s) for s in seeds)} (every value of a task on the same "
            f"seeds). {selection_note(list(cells.values()))}"))
        made.append(Figure(stem, caption, number))
    return made


# ---------------------------------------------------------------------------
# Figures 4 and 8: accuracy vs ne
# ---------------------------------------------------------------------------
def _ne_curves(records: list[dict]) -> dict[str, tuple[list[dict], dict[str, list[dict]]]]:
    """benchmark -> (records, task -> records) of the main variant, tasks with several ne."""
    def keep(r: dict) -> bool:
        return is_fixed_ne_heart(r) and is_vtab_like(r)

    out = {}
    for benchmark, recs in _by_benchmark(records, keep).items():
        per_task: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            if ne_of(r) is not None:
                per_task[r["task"]].append(r)
        curves = {t: rs for t, rs in per_task.items() if len({ne_of(r) for r in rs}) > 1}
        if curves:
            out[benchmark] = (recs, curves)
    return out


def _draw_ne(ax: Any, recs: list[dict], task: str) -> tuple[frozenset, bool, list[Any]]:
    """The curve on the seeds every ne has; grey: the range over all seeds where there are more."""
    from matplotlib.ticker import MaxNLocator

    by_ne: dict[int, list[dict]] = defaultdict(list)
    for r in recs:
        by_ne[ne_of(r)].append(r)  # type: ignore[index]
    cells, seeds = curve_cells(dict(by_ne))
    points = sorted(cells.items())
    extra = False
    for ne, rs in sorted(by_ne.items()):
        everything = select_cell(rs)
        if everything is not None and everything.n > len(seeds) > 0:
            values = list(everything.by_seed.values())
            ax.vlines(ne, min(values), max(values), color="#999999", lw=2.5, alpha=0.6, zorder=1)
            extra = True
    ys = [c.mean for _, c in points]
    errs = [c.std or 0.0 for _, c in points]
    ax.errorbar([ne for ne, _ in points], ys, yerr=errs if any(errs) else None, marker="o",
                capsize=1.5, color="#1f5fa8", zorder=2)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.set_title(_label(task))
    return seeds, extra, list(cells.values())


def _ne_figure(records: list[dict], out: Path, number: int) -> list[Figure]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    made = []
    for benchmark, (recs, per_task) in _ne_curves(records).items():
        curves = [t for t in _tasks(recs) if t in per_task]
        if number == 4:
            paper = [t for t in PAPER_FIG4_TASKS if t in curves]
            curves = paper if len(paper) == 2 else curves[:2]
        ncols = 2 if number == 4 else 3
        nrows = math.ceil(len(curves) / ncols)
        seed_sets, extra, shown_cells = set(), False, []
        shown: dict[str, list[float]] = {}
        with plt.rc_context(_rc()), sns.axes_style("whitegrid"):
            fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                     figsize=(COLUMN_WIDTH_IN, 1.2 * nrows + 0.45))
            for i, task in enumerate(curves):
                ax = axes[i // ncols][i % ncols]
                seeds, more, drawn = _draw_ne(ax, per_task[task], task)
                shown_cells += drawn
                shown[task] = [v for r in per_task[task] if (v := test_acc(r)) is not None]
                seed_sets.add(seeds)
                extra |= more
                if i % ncols == 0:
                    ax.set_ylabel("acc. (%)")
                if i + ncols >= len(curves):
                    ax.set_xlabel("ne")
            for j in range(len(curves), nrows * ncols):
                axes[j // ncols][j % ncols].set_visible(False)
            _mark(fig, benchmark)
            stem = f"fig{number}_{benchmark}"
            _save(fig, out, stem)
            plt.close(fig)
        names = ", ".join(tex(_label(t)) for t in curves)
        which = (f"two tasks: {names}" if number == 4 else
                 f"the {len(curves)} task(s) with records at several ne: {names}")
        seeds = " / ".join(_seeds_text(s) for s in sorted(seed_sets, key=lambda x: sorted(map(str, x))))
        spread = ("error bars: sample std over them" if any(len(s) > 1 for s in seed_sets)
                  else "one seed, so no spread on the curve")
        grey = ("; grey bars: the range over all seeds at an ne that has more seeds than the curve"
                if extra else "")
        chance = _chance(recs, curves, shown)
        grey += f". At chance for every ne: {', '.join(chance)}" if chance else ""
        number_text, caption = fig_caption(number, benchmark, (
            f"Effect of ne on {_bench(benchmark)} ({which}): Heart-LoRA accuracy vs the number "
            f"of masked heads. Curve: mean over {seeds}, the seeds every ne of the task has "
            f"({spread}){grey}. {selection_note(shown_cells)}"))
        made.append(Figure(stem, caption, number_text))
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


def colour_scale(matrix: Any) -> tuple[str, Any, str]:
    """(colour map, matplotlib norm, what the scale is) for one map.

    Signed scores (the Taylor score can be negative): zero at the middle of a map whose
    lightness rises monotonically (:data:`SIGNED_MAP`, so sign and size survive grey-scale
    print: darker = more negative), on a symmetric log scale (linear within +-the median |score|, logarithmic beyond, limits
    +-max |score|), so one outlier neither washes out the rest nor is clipped. Non-negative
    scores (weight / gradient L2): min-max per map.
    """
    import numpy as np
    from matplotlib.colors import Normalize, SymLogNorm

    low = float(np.nanmin(matrix))
    if low < 0:
        magnitude = np.abs(matrix[np.isfinite(matrix)])
        limit = float(magnitude.max())
        linthresh = float(np.median(magnitude[magnitude > 0])) if (magnitude > 0).any() else 1.0
        return SIGNED_MAP, SymLogNorm(linthresh, vmin=-limit, vmax=limit, base=10), "signed"
    high = float(np.nanmax(matrix))
    return "Blues", Normalize(low, high if high > low else low + 1.0), "min-max"


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


def _heatmaps(panels: list[tuple[str, Any]], out: Path, stem: str, benchmark: str,
              title: str = "") -> list[str]:
    """One heat map per panel, each with its own colour bar; returns each panel's scale."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scales = []
    with plt.rc_context(_rc()):
        # Drawn at the width it is placed at (3.4 in), so font sizes are the printed ones.
        fig, axes = plt.subplots(1, len(panels), figsize=(COLUMN_WIDTH_IN, 2.25),
                                 sharey=True, squeeze=False, layout="constrained")
        for ax, (panel_title, matrix) in zip(axes[0], panels, strict=True):
            cmap, norm, what = colour_scale(matrix)
            scales.append(what)
            image = ax.imshow(matrix, origin="lower", cmap=cmap, norm=norm,
                              aspect="auto", interpolation="nearest")
            layers, heads = matrix.shape
            ax.set_title(panel_title)
            ax.set_xlabel("head")
            ax.set_xticks(range(0, heads, max(1, heads // 4)))
            ax.set_yticks(range(0, layers, max(1, layers // 6)))
            bar = fig.colorbar(image, ax=ax, location="bottom", fraction=0.08, pad=0.02)
            bar.ax.tick_params(labelsize=COLOURBAR_TICK_PT, length=2, pad=1)
            bar.ax.xaxis.get_offset_text().set_fontsize(COLOURBAR_TICK_PT)
            if what == "signed":  # zero and the two limits, the scale's power of ten below
                power = math.floor(math.log10(norm.vmax)) if norm.vmax > 0 else 0
                bar.set_ticks([norm.vmin, 0.0, norm.vmax],
                              labels=[f"{norm.vmin / 10**power:.1f}", "0",
                                      f"{norm.vmax / 10**power:.1f}"])
                bar.set_label(f"$\\times 10^{{{power}}}$", fontsize=COLOURBAR_TICK_PT,
                              labelpad=1)
            else:
                bar.locator = MaxNLocator(3)
                bar.formatter.set_powerlimits((-2, 3))
                bar.update_ticks()
        axes[0][0].set_ylabel("layer")
        _mark(fig, benchmark, title)
        _save(fig, out, stem)
        plt.close(fig)
    return scales


def _scale_text(scales: list[str]) -> str:
    if all(s == "min-max" for s in scales):
        return "colour: min-max per map (darker = more responsive)"
    return ("colour: signed scores from dark (most negative) through the middle of the bar "
            "(0) to light (most positive; lightness rises monotonically, so it reads in grey "
            "scale), symmetric-log (linear up to the median $|$score$|$ of the map, "
            "logarithmic beyond, limits $\\pm$ its largest $|$score$|$); non-negative scores "
            "min-max per map (darker = more responsive)")


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
        scales = _heatmaps(panels, out, stem, benchmark)
        seeds = ", ".join(f"{tex(_label(t))} seed {chosen[t]['seed']}" for t in tasks)
        number, caption = fig_caption(6, benchmark, (
            f"Head-level responsiveness (Taylor score of the q updates) on {_bench(benchmark)}, "
            f"per layer and head, one run each ({seeds}); {_scale_text(scales)}."))
        made.append(Figure(stem, caption, number))
    return made


def fig7(records: list[dict], out: Path) -> list[Figure]:
    made = []
    scores = ("taylor", "weight_l2", "grad_l2")
    for benchmark, chosen in _map_records(records, scores).items():
        task = PAPER_FIG7_TASK if PAPER_FIG7_TASK in chosen else _tasks(list(chosen.values()))[0]
        panels = [(SCORE_NAMES[s], _score_map(chosen[task], s)) for s in scores]
        stem = f"fig7_{benchmark}"
        scales = _heatmaps(panels, out, stem, benchmark,
                           title=f"{_label(task)}: responsiveness of the q updates")
        number, caption = fig_caption(7, benchmark, (
            f"Responsiveness of the q updates on {_bench(benchmark)} task {tex(_label(task))} "
            f"(one run, seed {chosen[task]['seed']}) by Taylor score, weight L2 norm and "
            f"gradient L2 norm; {_scale_text(scales)}."))
        made.append(Figure(stem, caption, number))
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
