"""The paper's Tables 1-6, one :class:`TableSpec` each: everything a table varies in.

:data:`TABLES` is the registry, in table order. Who reads what:

* :mod:`heartbench.report.reference`: ``file`` (the printed rows in ``baselines/``), its
  value columns (``per_task``, ``size``), and ``swin`` for the cross-check with Table 1;
* :func:`heartbench.report.select.tables_for`: ``swin`` and ``rows`` (which records feed
  the table), after the rules common to every table;
* :mod:`heartbench.report.stats`: ``defining`` (when a measured block is written) and
  ``per_task`` (the columns compared with the paper);
* :mod:`heartbench.report.tables`: ``caption``, ``subject``, ``layout``, ``decimals``,
  ``per_task`` and ``size`` (the LaTeX layout).

Data and record predicates only: captions are the paper's text (LaTeX as printed), never
formatted here. Imports :mod:`heartbench.report.variants` only, so every report module
can import this one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from heartbench.report.variants import heart_key, is_fair, is_swin, row_key

# The group columns as most tables print them (the CSV files order them natural ... avg).
GROUP_LAYOUT: tuple[str, ...] = ("avg", "natural", "specialized", "structured")
# Rows of Table 1 (by row key) that Tables 3, 5 and 6 repeat as their baselines.
ABLATION_BASELINES: tuple[str, ...] = ("full", "lora")


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables: its printed rows, which records feed it, its layout."""

    number: int
    file: str  # the paper's printed rows: baselines/<file> (columns: reference.value_columns)
    caption: str  # the paper's caption, LaTeX as printed
    subject: str  # what it compares, for the caption of a measured-only (twin) table
    # Whether a record of the table's backbone feeds it (a pure function of the record's
    # fields; select.tables_for has already left out what feeds no table at all).
    rows: Callable[[dict], bool]
    swin: bool = False  # Swin-B backbone: Swin records feed this table and no other (else ViT-B)
    per_task: bool = False  # one column per task (then Avg.), not the group columns
    size: bool = False  # a Size (MB) column: stored adapter bytes
    layout: tuple[str, ...] = GROUP_LAYOUT  # group columns in printed order (not per_task)
    decimals: int = 1  # of measured values and of measured-minus-reported differences
    # Row keys the table is about: a measured block is written only when it has one of them
    # (not just the rows it repeats from Table 1), and a twin block shows only the tasks they
    # have, per task. Empty: every block is written, in the paper's columns.
    defining: tuple[str, ...] = ()
    # Not the paper's: the fair comparison (records of suites/*_fair.toml only, and those feed
    # no other table); no printed rows (``file`` empty), named table_fair[_<benchmark>].
    fair: bool = False

    def feeds(self, record: dict) -> bool:
        """Whether a done, VTAB-style record inside the paper's search space feeds this table."""
        return (is_fair(record) == self.fair and is_swin(record) == self.swin
                and self.rows(record))


def repeats_baseline(record: dict) -> bool:
    """A Full or LoRA record (by label, any method but Heart-LoRA): Table 1's baseline rows."""
    return heart_key(record) is None and row_key(record) in ABLATION_BASELINES


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        number=1,
        file="table1_vtab1k.csv",
        caption="Results on the VTAB-1K benchmark. ``Avg. Acc.'' signifies the mean performance "
                "across three categories. ``Size'' indicates the average number of trainable "
                "parameters within the backbones for each task, excluding the classification "
                "heads which account for 0.14 MB per task on average. $^\\dagger$ indicates "
                "results sourced from [34] where inputs are standardized.",
        subject="accuracy per task, size and average",
        rows=lambda r: heart_key(r) in (None, "heart_lora"),  # every method; the main Heart-LoRA
        per_task=True,
        size=True,
    ),
    TableSpec(
        number=2,
        file="table2_quantization.csv",
        caption="Comparison between the original Heart-LoRA using quantization and Heart-LoRA "
                "using FP32 precision adapters on VTAB-1K.",
        subject="1-bit vs FP32 adapters",
        rows=lambda r: heart_key(r) in ("heart_lora", "heart_lora_fp32"),
        layout=("natural", "specialized", "structured", "avg"),  # the average last
        decimals=2,
        defining=("heart_lora_fp32",),
    ),
    TableSpec(
        number=3,
        file="table3_per_layer.csv",
        caption="Results on VTAB-1K of Heart-LoRA$^\\dagger$, using a layer by layer deployment "
                "of the calculation in section 3.",
        subject="per-layer Heart-LoRA$^\\dagger$",
        rows=lambda r: repeats_baseline(r) or heart_key(r) == "heart_lora_per_layer",
        defining=("heart_lora_per_layer",),
    ),
    TableSpec(
        number=4,
        file="table4_swin.csv",
        caption="Results on VTAB-1K using Swin-B as backbone, reported accuracy from average, "
                "natural, specialized and structured.",
        subject="Swin backbone",
        rows=lambda r: True,  # every Swin record, whatever its label
        swin=True,
    ),
    TableSpec(
        number=5,
        file="table5_responsiveness.csv",
        caption="Results on VTAB-1K of Heart-LoRA$^\\dagger$, using L2 norm of weight (denoted "
                "as weight) or L2 norm of gradient (denoted as grad) to calculate the "
                "responsiveness.",
        subject="weight-L2 and grad-L2 responsiveness, per layer",
        rows=lambda r: repeats_baseline(r) or heart_key(r) in (
            "heart_lora_per_layer_weight", "heart_lora_per_layer_grad"),
        defining=("heart_lora_per_layer_weight", "heart_lora_per_layer_grad"),
    ),
    TableSpec(
        number=6,
        file="table6_front.csv",
        caption="Comparison between using arbitrary deactivation and the original Heart-LoRA.",
        subject="front (arbitrary) deactivation vs Heart-LoRA; measured rows also random heads "
                "and Heart-LoRA's scores averaged over the warm-up's last epoch",
        # Beside the paper's rows: the other arbitrary choice (random heads) and Heart-LoRA's
        # scores read over the warm-up's last epoch instead of its last step (the score-window
        # ablation): every way of choosing the heads in one table. A block is written only
        # where the paper's own variant (front) has records.
        rows=lambda r: repeats_baseline(r) or heart_key(r) in (
            "front", "heart_lora", "heart_lora_global_random", "heart_lora_window_epoch"),
        defining=("front",),
    ),
    TableSpec(
        number=7,
        file="",
        caption="Fair comparison (not in the paper): every method gets the same number of "
                "configurations per task, over its own most important hyper-parameters "
                "(Heart-LoRA's ne and s share one budget, ne = 0 inside it), chosen on val200 "
                "after training on train800, retrained on train800val200 and tested once "
                r"(suites/*\_fair.toml; docs/recipes.md).",
        subject="fair comparison: equal budgets, chosen on val200",
        rows=lambda r: True,
        per_task=True,
        size=True,
        fair=True,
    ),
)
# The few-shot fair comparison (heartbench.report.fair): rows x shots, not a VTAB table.
FAIR_FEWSHOT_CAPTION = (
    "Fair few-shot comparison (not in the paper): top-1 accuracy per shot count, mean over "
    r"the datasets (and $\pm$ sample std over seeds of that mean); every method gets the "
    "same number of configurations per dataset and shot count, chosen on the few-shot val "
    r"split, retrained on train and tested once (suites/fewshot*\_fair.toml; "
    "docs/recipes.md).")
_BY_NUMBER: dict[int, TableSpec] = {spec.number: spec for spec in TABLES}


def table_spec(number: int) -> TableSpec:
    """The registry's entry for the paper's table ``number``."""
    return _BY_NUMBER[number]


@dataclass(frozen=True)
class TwinTableSpec:
    """A measured-only table of the CPU twin that the paper does not have (numbered T7 on)."""

    number: int
    key: str  # what it shows, for file names: table<number>_<benchmark>.tex
    caption: str  # the fixed part; the builder adds what the records say (old masks, seeds)
    template: str  # in heartbench/report/templates/


TWIN_TABLES: tuple[TwinTableSpec, ...] = (
    TwinTableSpec(
        number=7,
        key="mask_stability",
        caption="Mask stability of Heart-LoRA on the CPU twin: per task, the mean pairwise "
                "Jaccard index of the masked (layer, head) sets over the row's seeds; Chance "
                "is its exact expectation for masks drawn at random with the same structure "
                "(ne heads of each unit: global, all layers alike; per layer, each layer "
                "apart); lr is the mean learning rate of the optimiser steps before the scores "
                "were read. No bold: nothing is ranked.",
        template="table_tasks.tex.j2",
    ),
    TwinTableSpec(
        number=8,
        key="paired",
        caption="Paired differences on the CPU twin (heartbench/report/paired.py): in each "
                "block, each row's test accuracy minus the block's reference row, over the "
                "UNIT units both ran (a run stored by two suites counts once). Diff.: mean "
                "difference in points; Std: its sample std; +/$-$/=: units where the row is "
                "better / worse / equal; $p$: two-sided Wilcoxon signed-rank test, zero "
                "differences dropped, not corrected for the number of rows. No bold: a row "
                "is called better or worse in the text only where $|$Diff.$|$ exceeds Std "
                "and $p < 0.05$.",
        template="table_groups.tex.j2",
    ),
)

