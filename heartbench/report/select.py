"""Which records feed which table, and which grid configuration a cell shows.

Pure functions over run records (dicts as stored by :mod:`heartbench.results`); no
formatting here. The rules are described in :mod:`heartbench.report.tables`; each table's
own rule is its entry in :mod:`heartbench.report.table_specs`. What a record is (backbone,
Heart-LoRA variant, row key, ne) comes from :mod:`heartbench.report.variants`, re-exported.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from heartbench.report import reference as ref
from heartbench.report.table_specs import TABLES
from heartbench.report.variants import backbone_name as backbone_name
from heartbench.report.variants import (
    heart_key,
    is_swin,
    is_vtab_like,
    ne_of,
    normalize_label,
    row_key,
)
from heartbench.suite import LEGACY_FEWSHOT_TRAIN, LEGACY_TRAIN, NON_RESULT_TRAIN_KEYS

# The paper searches ne in {1, 3, 6} and falls back to ne = 0 where masking hurts (App. F.5).
PAPER_NE: tuple[int, ...] = (0, 1, 3, 6)
# The CPU twins' benchmarks (synth: the throwaway smoke data), never the paper's numbers.
TWIN_BENCHMARKS: tuple[str, ...] = ("vtab_mini", "fewshot_mini", "synth")
# The twins whose records are kept and checked (smoke's synth records are throwaway).
KEPT_TWIN_BENCHMARKS: tuple[str, ...] = tuple(b for b in TWIN_BENCHMARKS if b != "synth")
PAPER_BENCHMARK = "vtab1k"
BENCHMARK_NAMES: dict[str, str] = {
    "vtab1k": "VTAB-1K",
    "vtab_mini": "VTAB-mini twin",
    "synth": "synthetic twin",
    "fewshot": "few-shot",
    "fewshot_mini": "few-shot twin",
}


# ---------------------------------------------------------------------------
# Which records feed which table
# ---------------------------------------------------------------------------
def is_fixed_ne_heart(record: dict) -> bool:
    """The paper's Heart-LoRA (``heart_key`` "heart_lora") run at a fixed ne on a ViT: not an
    ablation variant, not a run that chose its ne on val (``search``), not a Swin run. The
    runs the ne figures plot and Figure 5 draws."""
    return heart_key(record) == "heart_lora" and not record.get("search") and not is_swin(record)


def tables_for(record: dict) -> tuple[int, ...]:
    """The numbers of the tables a record feeds: each table's own rule is its entry in
    :data:`heartbench.report.table_specs.TABLES` (``swin``, ``rows``); here only what
    keeps a record out of every table (see :mod:`heartbench.report.tables`)."""
    if record.get("status") != "done" or not is_vtab_like(record):
        return ()
    if heart_key(record) is not None and not is_swin(record) and ne_of(record) not in (None, *PAPER_NE):
        return ()  # the ne sweep of Figs 4 and 8, outside the paper's search space (Swin: ratio)
    return tuple(spec.number for spec in TABLES if spec.feeds(record))


def reported_match(row: ref.ReportedRow, key: str) -> bool:
    """Whether a measured row key is the printed row ``row``."""
    return key == row.key or key == normalize_label(row.method)


# ---------------------------------------------------------------------------
# Aggregation over seeds and grid configurations
# ---------------------------------------------------------------------------
def run_setting(record: dict) -> dict[str, Any]:
    """What every record of one measured row shares besides its label, variant and protocol:
    the backbone (name, weights file, drop-path rate, kwargs) and every training setting that
    changes a result (``train`` less :data:`heartbench.suite.NON_RESULT_TRAIN_KEYS`,
    completed with the values of keys added after older records were stored). Flat, so a
    row name can say where two rows differ. The weights' sha256 (``content``, absent from
    older records) is compared where known: :func:`split_known`."""
    backbone = record.get("backbone") or {}
    train = dict(record.get("train") or {})
    if record.get("shots") is not None:
        train = {**LEGACY_FEWSHOT_TRAIN, **train}
    train = {**LEGACY_TRAIN, **train}
    setting: dict[str, Any] = {
        "backbone": backbone.get("name"), "weights": backbone.get("weights"),
        "drop_path_rate": backbone.get("drop_path_rate"),
        "backbone kwargs": backbone.get("kwargs") or {},
    }
    setting.update({k: v for k, v in sorted(train.items()) if k not in NON_RESULT_TRAIN_KEYS})
    return setting


def setting_id(record: dict) -> str:
    """:func:`run_setting` as one canonical string (a row's identity includes it)."""
    return json.dumps(run_setting(record), sort_keys=True, default=str)


def config_id(record: dict) -> str:
    """One configuration: everything a run's result depends on but its seed. The grid point
    and the whole method config as stored (records that differ in any setting, a default
    changed between runs or a suite's variant, are never averaged as seeds of one
    configuration; completing old records' configs with their legacy values needs the method
    registry, hence torch, and the stored dicts already differ, since a record stores every
    key its code had), the run setting (:func:`run_setting`: backbone, weights, training
    settings), the data (benchmark, task, shots, classes) and the eval protocol; the data's
    fingerprint where stored is compared by :func:`split_known`. A run that searched a grid on val200 (``search``) is one
    configuration whatever point it chose: the search, not the choice."""
    search = record.get("search") or {}
    config = {k: v for k, v in (record.get("method_config") or {}).items() if k not in search}
    data = {"benchmark": record.get("benchmark"), "task": record.get("task"),
            "shots": record.get("shots"), "num_classes": record.get("num_classes")}
    return json.dumps({"grid": record.get("grid") or {}, "search": search,
                       "method_config": config, "setting": run_setting(record), "data": data,
                       "protocol": record.get("eval_protocol"), "method": record.get("method")},
                      sort_keys=True, default=str)


def config_id_across_tasks(record: dict) -> str:
    """:func:`config_id` less the task, its class count and the shot count: one configuration
    of a row, across the tasks (and few-shot splits) it ran on."""
    ident = json.loads(config_id(record))
    ident["data"] = {"benchmark": ident["data"]["benchmark"]}
    return json.dumps(ident, sort_keys=True)


def test_acc(record: dict) -> float | None:
    value = (record.get("metrics") or {}).get("test_acc")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def val_acc(record: dict) -> float | None:
    value = (record.get("metrics") or {}).get("val_acc")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def mean_of(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def std_of(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Cell:
    """One (row, task): the selected grid configuration's accuracy per seed."""

    by_seed: dict[Any, float]
    config: str
    n_configs: int
    selected_on: str  # "test", "val" or "only" (a single configuration)
    stored_bytes: float | None
    records: list[dict] = field(default_factory=list)  # the chosen configuration's records

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return mean_of(list(self.by_seed.values()))

    @property
    def std(self) -> float | None:
        return std_of(list(self.by_seed.values()))


def _by_seed(records: list[dict], metric: Any) -> dict[Any, float]:
    """Metric per seed (several records of one seed and config are averaged)."""
    per: dict[Any, list[float]] = defaultdict(list)
    for r in records:
        value = metric(r)
        if value is not None:
            per[r["seed"]].append(value)
    return {seed: mean_of(v) for seed, v in sorted(per.items(), key=lambda kv: str(kv[0]))}


def content_of(record: dict, key: str) -> str | None:
    """``content.<key>`` ("weights": the weights' sha256, "data": the task's fingerprint),
    or None for a record written before content was stored."""
    content = record.get("content")
    value = content.get(key) if isinstance(content, dict) else None
    return value if isinstance(value, str) and value else None


def split_known(records: list[dict], key: str) -> dict[str | None, list[dict]]:
    """``records`` by ``content.<key>``, where two known values differ: records that ran on
    other weights or data are never seeds of one configuration. A record that does not know
    its value (older than the field) goes with the one known value, as a stored run is
    trusted to match where only one side is known (``heartbench.content.stale_reason``)."""
    known = {v for r in records if (v := content_of(r, key)) is not None}
    if len(known) <= 1:
        return {next(iter(known), None): list(records)}
    out: dict[str | None, list[dict]] = defaultdict(list)
    for r in records:
        out[content_of(r, key)].append(r)
    return dict(out)


def _configs(records: list[dict]) -> dict[str, list[dict]]:
    configs: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if test_acc(r) is not None:
            configs[config_id(r)].append(r)
    out: dict[str, list[dict]] = {}
    for cid, rs in configs.items():
        parts = split_known(rs, "data")
        for data, part in parts.items():
            out[cid if len(parts) == 1 else f"{cid} data {data}"] = part
    return out


def _seed_order(seed: Any) -> str:
    return str(seed)


def seeds_of(records: list[dict]) -> frozenset:
    """The seeds with a test accuracy among ``records``."""
    return frozenset(r["seed"] for r in records if test_acc(r) is not None)


def row_seed_set(per_task: dict[str, list[dict]]) -> frozenset:
    """The seeds a row can show on every task with one configuration per task.

    Per task, the configuration covering the most seeds; the row's seed set is what those
    have in common. A cell is then chosen among the configurations that cover this whole set
    (:func:`select_cell` with ``seeds``), so no cell compares a three-seed mean with a
    single-seed run.
    """
    out: frozenset | None = None
    for records in per_task.values():
        configs = _configs(records)
        if not configs:
            continue
        widest = max((seeds_of(rs) for rs in configs.values()),
                     key=lambda s: (len(s), sorted(map(_seed_order, s))))
        out = widest if out is None else out & widest
    return out or frozenset()


def select_cell(records: list[dict], seeds: frozenset | None = None) -> Cell | None:
    """The best grid configuration of one (row, task) and its per-seed accuracies.

    With ``seeds``, only configurations that have every one of those seeds compete, each
    on exactly those seeds (equal seed coverage). The choice is on the mean validation
    accuracy when every record was run under the ``val`` protocol, else on the mean test
    accuracy (the paper's way).
    """
    configs = _configs(records if seeds is None else [r for r in records if r["seed"] in seeds])
    if seeds is not None:
        configs = {c: rs for c, rs in configs.items() if seeds_of(rs) >= seeds}
    if not configs:
        return None
    on_val = all(r.get("eval_protocol") == "val" and val_acc(r) is not None
                 for rs in configs.values() for r in rs)
    metric = val_acc if on_val else test_acc
    scored = sorted((-mean_of(list(_by_seed(rs, metric).values())), cid)
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
        stored_bytes=mean_of(sizes) if sizes else None,
        records=sorted(chosen, key=lambda r: (_seed_order(r["seed"]), r["run_id"])),
    )


def _outside_paper_ne(record: dict) -> bool:
    return heart_key(record) is not None and not is_swin(record) \
        and ne_of(record) not in (None, *PAPER_NE)


def unplaced(records: list[dict], results_dir: str = "results") -> list[str]:
    """Done VTAB-style records that feed no table, one line per label: why, and how to show
    them (the ne sweep: its figures; another variant: the records' frame, or a new table)."""
    groups: dict[tuple[str, str, str, bool], list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status") == "done" and is_vtab_like(r) and not tables_for(r):
            groups[(r["benchmark"], r["label"], row_key(r), _outside_paper_ne(r))].append(r)
    lines = []
    for (bench, label, key, sweep), group in sorted(groups.items()):
        n = len(group)
        suites = ", ".join(sorted({str(r.get("suite")) for r in group}))
        head = f"{bench}: {label} ({key}, {n} record{'s' if n != 1 else ''} of suite {suites})"
        if sweep:
            values = ", ".join(str(v) for v in sorted({ne_of(r) for r in group}))
            lines.append(f"{head}: ne = {values} lies outside the paper's search space"
                         f" {{{', '.join(map(str, PAPER_NE))}}}; these runs are the ne sweep,"
                         f" plotted in fig4_{bench} and fig8_{bench}")
        else:
            lines.append(f"{head}: no table has a row for {key!r}, a variant of its own; to"
                         f" see them: load_records({str(results_dir)!r}).frame.query("
                         f"\"label == {label!r}\") (heartbench.results, docs/records.md); to"
                         " give them a table: docs/adding-a-table.md")
    return lines
