"""Suites: a TOML file describing a whole experiment, validated and expanded into runs.

Schema (every key optional unless marked; docs/suites.md has the long form)::

    [suite]      name, description, benchmark*, data_root*, data_command (what makes the data,
                 named when it is missing; {root}, {tasks}), tasks, seeds, eval_protocol, shots
    [backbone]   name*, weights, drop_path_rate, kwargs
    [train]      epochs, warmup_epochs, lr, weight_decay, batch_size, warmup_lr_init, min_lr,
                 normalize, eval_every, num_workers, device, max_train_batches, precision
    [launcher]   executor, jobs (local worker processes), threads (torch threads per job),
                 timeout_min, partition,
                 gpus_per_node, cpus_per_task, mem_gb, array_parallelism, runs_per_task,
                 slurm_extra, pack (train up to K compatible runs as one model: pack.py)
    [[methods]]  name*, label, config, grid, per_task, tasks, seeds, train

Expansion: for each method entry, task, grid point, seed (and shot count for few-shot
benchmarks) one :class:`RunSpec`. ``per_task.<task>`` values override ``config`` and
remove that key from the grid for that task (e.g. Bi-LoRA's per-task scale). Under
``eval_protocol = "val"`` the grid is not expanded: each run searches it on val200.

A run's identity (``run_id``) is a hash of everything that changes its result — not the
suite name, the data location or launcher settings — so resume needs no database.
The data's and weights' content is checked beside it (``RunSpec.content``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from heartbench.errors import UserError, closest, one_of

EVAL_PROTOCOLS = ("last", "val", "best_of_test")
EXECUTORS = ("auto", "local", "debug", "slurm")

# Few-shot benchmarks expand over shot counts; the others have none.
FEWSHOT_BENCHMARKS = ("fewshot", "fewshot_mini")

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "warmup_epochs": 10,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "warmup_lr_init": 1e-6,
    "min_lr": 1e-5,
    "normalize": False,
    "eval_every": 10,  # test-set evaluations for best_of_test
    "num_workers": 0,
    "device": "auto",
    "max_train_batches": 0,  # 0: all; > 0 caps steps per epoch (quick checks only)
    "precision": "fp32",  # "fp32" as the reference code; "tf32" or "bf16" (autocast) opt-in
}
PRECISIONS = ("fp32", "tf32", "bf16")
# NOAH's few-shot recipe (protocol.md; its argparse defaults): Mixup 0.8 / CutMix 1.0 with
# label smoothing 0.1, RandomErasing 0.25, no ColorJitter next to RandAugment (timm drops it).
# Only few-shot runs carry these keys, so VTAB runs keep their identity.
FEWSHOT_RECIPE: dict[str, Any] = {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,
                                  "reprob": 0.25, "color_jitter": 0.0}
FEWSHOT_TRAIN_DEFAULTS = {"lr": 5e-3, "normalize": True, **FEWSHOT_RECIPE}
# Keys that do not change a run's result: left out of its identity.
NON_RESULT_TRAIN_KEYS = ("num_workers", "device")

SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "suite": {"name": str, "description": str, "benchmark": str, "data_root": str,
              "data_command": str,
              "tasks": list, "seeds": list, "eval_protocol": str, "shots": list},
    "backbone": {"name": str, "weights": str, "drop_path_rate": (int, float), "kwargs": dict},
    "train": {k: (int, float) if isinstance(v, float) else type(v)
              for k, v in {**TRAIN_DEFAULTS, **FEWSHOT_RECIPE}.items()},
    "launcher": {"executor": str, "jobs": int, "threads": int, "timeout_min": int, "partition": str,
                 "gpus_per_node": int, "cpus_per_task": int, "mem_gb": (int, float), "array_parallelism": int,
                 "runs_per_task": int, "slurm_extra": dict, "pack": int},
    "methods": {"name": str, "label": str, "config": dict, "grid": dict, "per_task": dict,
                "tasks": list, "seeds": list, "train": dict},
}
REQUIRED = {"suite": ("benchmark", "data_root"), "backbone": ("name",), "methods": ("name",)}


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs; plain data so it pickles to a Slurm job."""

    suite: str
    benchmark: str
    data_root: str
    task: str
    group: str | None
    num_classes: int
    shots: int | None
    method: str
    label: str
    method_config: dict[str, Any]
    grid: dict[str, Any]
    search: dict[str, list[Any]]  # eval_protocol "val": the grid searched on val200
    backbone: dict[str, Any]
    train: dict[str, Any]
    seed: int
    eval_protocol: str
    run_id: str = ""
    # The data's fingerprint and the weights' sha256 (heartbench/content.py): stored in the
    # record and compared on resume, not hashed into run_id, so older records keep their ids.
    content: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What changes this run's result: hashed into run_id."""
        train = {k: v for k, v in self.train.items() if k not in NON_RESULT_TRAIN_KEYS}
        if train.get("precision") == "fp32":  # the default: runs before the key keep their ids
            del train["precision"]
        return {"benchmark": self.benchmark, "task": self.task, "shots": self.shots,
                "method": self.method, "method_config": self.method_config,
                "search": self.search, "backbone": self.backbone, "train": train,
                "seed": self.seed, "eval_protocol": self.eval_protocol}

    def describe(self) -> str:
        grid = " ".join(f"{k}={v}" for k, v in sorted(self.grid.items()))
        shots = f" shots={self.shots}" if self.shots is not None else ""
        return f"{self.run_id}  {self.task:<22} {self.label:<18} seed={self.seed}{shots} {grid}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_id_of(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Suite:
    path: Path
    name: str
    description: str
    benchmark: str
    data_root: str
    tasks: list[str]
    eval_protocol: str
    backbone: dict[str, Any]
    train: dict[str, Any]
    launcher: dict[str, Any]
    runs: list[RunSpec] = field(default_factory=list)
    data_command: str | None = None  # suite.data_command (else preflight's per-benchmark one)


# ---------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------
def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"suite file {path} does not exist")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: malformed TOML: {err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None


def _check_table(path: Path, where: str, table: Any, schema: dict[str, Any]) -> None:
    if not isinstance(table, dict):
        raise UserError(f"{path}: [{where}] must be a table, got {type(table).__name__}")
    for key, value in table.items():
        if key not in schema:
            raise UserError(f"{path}: unknown key {where}.{key}{closest(key, schema)};"
                            f" allowed: {', '.join(schema)}")
        expected = schema[key]
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool
                                                  and bool not in _as_tuple(expected))
        if not ok:
            names = "/".join(t.__name__ for t in _as_tuple(expected))
            raise UserError(f"{path}: {where}.{key} must be {names}, got"
                            f" {type(value).__name__} {value!r}")


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _require(path: Path, where: str, table: dict[str, Any]) -> None:
    for key in REQUIRED.get(where.split("[")[0], ()):
        if key not in table:
            raise UserError(f"{path}: missing required key {where}.{key}")


def load_suite(path: str | Path, data_root: str | None = None) -> Suite:
    """Read, validate and expand a suite file; every mistake is a one-line UserError."""
    path = Path(path)
    raw = read_toml(path)
    for key in raw:
        if key not in SCHEMA:
            raise UserError(f"{path}: unknown table [{key}]{closest(key, SCHEMA)};"
                            f" allowed: {', '.join(SCHEMA)}")
    for section in ("suite", "backbone"):
        if section not in raw:
            raise UserError(f"{path}: missing required table [{section}]")
    for section in ("suite", "backbone", "train", "launcher"):
        table = raw.get(section, {})
        _check_table(path, section, table, SCHEMA[section])
        _require(path, section, table)
    methods = raw.get("methods")
    if not isinstance(methods, list) or not methods:
        raise UserError(f"{path}: needs at least one [[methods]] entry")
    for i, entry in enumerate(methods):
        _check_table(path, f"methods[{i}]", entry, SCHEMA["methods"])
        _require(path, f"methods[{i}]", entry)
    return _build(path, raw, data_root)


def _build(path: Path, raw: dict[str, Any], data_root: str | None) -> Suite:
    from heartbench.data.tasks import get_benchmark, resolve_task

    s = raw["suite"]
    benchmark = s["benchmark"]
    try:
        tasks_info = get_benchmark(benchmark)
    except UserError as err:
        raise UserError(f"{path}: suite.benchmark: {err}") from None
    task_names = s.get("tasks", ["all"])
    if task_names == ["all"]:
        task_names = list(tasks_info)
    tasks = [_task(path, "suite.tasks", benchmark, t, resolve_task).name for t in task_names]
    protocol = s.get("eval_protocol", "last")
    if protocol not in EVAL_PROTOCOLS:
        raise UserError(f"{path}: suite.eval_protocol: {one_of('protocol', protocol, EVAL_PROTOCOLS)}")
    seeds = _int_list(path, "suite.seeds", s.get("seeds", [42]))
    fewshot = benchmark in FEWSHOT_BENCHMARKS
    shots: list[int | None] = list(_int_list(path, "suite.shots", s.get("shots", [1, 2, 4, 8, 16]))) \
        if fewshot else [None]
    train = {**TRAIN_DEFAULTS, **(FEWSHOT_TRAIN_DEFAULTS if fewshot else {}), **raw.get("train", {})}
    _check_train(path, "train", train)
    backbone = _backbone(path, raw["backbone"])
    launcher = {"executor": "auto", **raw.get("launcher", {})}
    for key in ("jobs", "threads", "timeout_min", "cpus_per_task", "array_parallelism", "mem_gb",
                "runs_per_task", "pack"):
        if key in launcher and not launcher[key] > 0:
            raise UserError(f"{path}: launcher.{key} must be > 0, got {launcher[key]}")
    if launcher.get("gpus_per_node", 0) < 0:  # 0: a CPU job, no GPU (gres) request
        raise UserError(f"{path}: launcher.gpus_per_node must be >= 0, got"
                        f" {launcher['gpus_per_node']}")
    if launcher["executor"] not in EXECUTORS:
        raise UserError(f"{path}: launcher.executor: {one_of('executor', launcher['executor'], EXECUTORS)}")
    root = os.path.expandvars(os.path.expanduser(data_root or s["data_root"]))
    suite = Suite(path=path, name=s.get("name", path.stem), description=s.get("description", ""),
                  benchmark=benchmark, data_root=root, tasks=tasks, eval_protocol=protocol,
                  backbone=backbone, train=train, launcher=launcher,
                  data_command=s.get("data_command"))
    heads = None
    for i, entry in enumerate(raw["methods"]):
        where = f"methods[{i}]"
        method_tasks = [_task(path, f"{where}.tasks", benchmark, t, resolve_task).name
                        for t in entry.get("tasks", tasks)]
        method_seeds = _int_list(path, f"{where}.seeds", entry.get("seeds", seeds))
        method_train = {**train, **entry.get("train", {})}
        _check_table(path, f"{where}.train", entry.get("train", {}), SCHEMA["train"])
        _check_train(path, f"{where}.train", method_train)
        heads = heads or _heads(path, backbone)
        for task in method_tasks:
            info = tasks_info[task]
            for config, grid, search in _expand(path, where, entry, benchmark, task, protocol,
                                                heads):
                _check_schedule(path, where, entry["name"], config, search, method_train)
                for seed, k in itertools.product(method_seeds, shots):
                    spec = RunSpec(
                        suite=suite.name, benchmark=benchmark, data_root=root, task=task,
                        group=info.group, num_classes=info.num_classes, shots=k,
                        method=entry["name"], label=entry.get("label", _default_label(entry)),
                        method_config=config, grid=grid, search=search, backbone=backbone,
                        train=method_train, seed=seed, eval_protocol=protocol)
                    suite.runs.append(_with_id(spec))
    _check_duplicates(path, suite.runs)
    return suite


def _check_schedule(path: Path, where: str, name: str, config: dict[str, Any],
                    search: dict[str, list[Any]], train: dict[str, Any]) -> None:
    """A method's own schedule check (e.g. Heart-LoRA needs a warm-up epoch to score heads),
    for the config and every point it will search: at load time, not in a worker."""
    from heartbench.adapters import create_method

    points = [dict(zip(search, combo)) for combo in itertools.product(*search.values())]
    for point in points or [{}]:
        method = create_method(name, {**config, **point})
        check = getattr(method, "check_schedule", None)
        if check is None:
            return
        try:
            check(train["epochs"], train["warmup_epochs"])
        except UserError as err:
            raise UserError(f"{path}: {where}: {name}: {err}") from None


def _task(path: Path, where: str, benchmark: str, name: Any, resolve: Any) -> Any:
    if not isinstance(name, str):
        raise UserError(f"{path}: {where} entries must be strings, got {name!r}")
    try:
        return resolve(benchmark, name)
    except UserError as err:
        raise UserError(f"{path}: {where}: {err}") from None


def _int_list(path: Path, where: str, values: Any) -> list[int]:
    if not isinstance(values, list) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise UserError(f"{path}: {where} must be a non-empty list of non-negative integers,"
                        f" got {values!r}")
    return list(values)


def _check_train(path: Path, where: str, train: dict[str, Any]) -> None:
    for key, value in train.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{path}: {where}.{key} must be a finite number, got {value}")
    positive = ("epochs", "lr", "batch_size")
    for key in positive:
        if train[key] <= 0:
            raise UserError(f"{path}: {where}.{key} must be > 0, got {train[key]}")
    for key in ("warmup_epochs", "weight_decay", "warmup_lr_init", "min_lr", "num_workers",
                "max_train_batches"):
        if train[key] < 0:
            raise UserError(f"{path}: {where}.{key} must be >= 0, got {train[key]}")
    if train["warmup_epochs"] >= train["epochs"]:
        raise UserError(f"{path}: {where}.warmup_epochs ({train['warmup_epochs']}) must be smaller"
                        f" than epochs ({train['epochs']})")
    if train["eval_every"] <= 0:
        raise UserError(f"{path}: {where}.eval_every must be > 0, got {train['eval_every']}")
    if train["precision"] not in PRECISIONS:
        raise UserError(f"{path}: {where}.precision must be one of {', '.join(PRECISIONS)},"
                        f" got {train['precision']!r}")
    if train["device"] not in ("auto", "cpu", "cuda"):
        raise UserError(f"{path}: {where}.device must be 'auto', 'cpu' or 'cuda', got {train['device']!r}")


def _backbone(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    from heartbench.backbones import resolve_name

    try:
        resolve_name(table["name"])
    except UserError as err:
        raise UserError(f"{path}: backbone.name: {err}") from None
    rate = table.get("drop_path_rate", 0.1)
    if not 0.0 <= rate < 1.0:
        raise UserError(f"{path}: backbone.drop_path_rate must be in [0, 1), got {rate}")
    weights = table.get("weights")
    if weights not in (None, "timm"):
        weights = os.path.expandvars(os.path.expanduser(weights))
    return {"name": table["name"], "weights": weights,
            "drop_path_rate": float(table.get("drop_path_rate", 0.1)),
            "kwargs": dict(table.get("kwargs", {}))}


def _heads(path: Path, backbone: dict[str, Any]) -> Any:
    """A weightless (meta-device) build of the backbone, for config checks like ne < heads."""
    from heartbench.backbones import meta_backbone

    try:
        built = meta_backbone(backbone["name"], **backbone["kwargs"])
    except UserError:
        raise
    except Exception as err:  # timm rejects impossible shapes with assorted exceptions
        raise UserError(f"{path}: backbone.kwargs {backbone['kwargs']} do not build"
                        f" {backbone['name']!r}: {type(err).__name__}: {err}") from None
    if not built.sites:
        raise UserError(f"{path}: backbone {backbone['name']!r} has no attention sites")
    return built


def _default_label(entry: dict[str, Any]) -> str:
    return entry["name"]


def _expand(path: Path, where: str, entry: dict[str, Any], benchmark: str, task: str,
            protocol: str, backbone: Any
            ) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]]:
    """(resolved config, swept values, val-search space) per grid point of one method/task."""
    from heartbench.adapters.base import get_method_class

    try:
        cls = get_method_class(entry["name"])
    except UserError as err:
        raise UserError(f"{path}: {where}.name: {err}") from None
    overrides = _per_task(path, where, entry.get("per_task", {}), benchmark, task)
    grid = {k: v for k, v in entry.get("grid", {}).items() if k not in overrides}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: {where}.grid.{key} must be a non-empty list, got {values!r}")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    base = {**entry.get("config", {}), **overrides}
    configs = [(_config(path, where, cls, {**base, **p}, backbone), p) for p in points]
    if protocol == "val":  # one run per task that searches the grid on val200 itself
        return [(_config(path, where, cls, base, backbone), {}, grid)]
    return [(config, point, {}) for config, point in configs]


def _per_task(path: Path, where: str, per_task: dict[str, Any], benchmark: str, task: str
              ) -> dict[str, Any]:
    """The config values that ``per_task`` sets for ``task`` (task names may be aliases)."""
    from heartbench.data.tasks import resolve_task

    overrides: dict[str, Any] = {}
    for name, values in per_task.items():
        if not isinstance(values, dict):
            raise UserError(f"{path}: {where}.per_task.{name} must be a table of config values")
        if _task(path, f"{where}.per_task", benchmark, name, resolve_task).name == task:
            overrides.update(values)
    return overrides


def _config(path: Path, where: str, cls: Any, values: dict[str, Any], backbone: Any
            ) -> dict[str, Any]:
    try:
        config = cls.config_cls.from_dict(values, where=f"{where}.config")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    try:
        cls(config).check_backbone(backbone)
    except UserError as err:
        raise UserError(f"{path}: {where}.config: {err}") from None
    return config.to_dict()


def _with_id(spec: RunSpec) -> RunSpec:
    data = spec.to_dict()
    data["run_id"] = run_id_of(spec.identity())
    return RunSpec(**copy.deepcopy(data))


def _check_duplicates(path: Path, runs: list[RunSpec]) -> None:
    seen: dict[str, RunSpec] = {}
    for run in runs:
        if run.run_id in seen:
            raise UserError(f"{path}: two entries describe the same run ({run.task}, {run.method},"
                            f" seed {run.seed}); give them different configs or remove one")
        seen[run.run_id] = run
