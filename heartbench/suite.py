"""Suites: a TOML file describing a whole experiment, validated and expanded into runs.

Schema (every key optional unless marked; docs/suites.md has the long form)::

    [suite]      name, description, benchmark*, data_root*, data_command (what makes the data,
                 named when it is missing; {root}, {tasks}), tasks, seeds, eval_protocol, shots,
                 plugins (method files, relative to the suite file, or module names: plugins.py)
    [tasks.NAME] root*, num_classes*, group: a task of your own in the VTAB-1K list layout
                 (root relative to the suite file; group default "Custom"); it joins
                 suite.tasks (methods[].tasks may still leave it out)
    [backbone]   name*, weights, drop_path_rate, kwargs, pre_logits (the paper's ViT-B/16
                 representation layer, loaded from the .npz: backbones.PreLogits)
    [train]      epochs, warmup_epochs, lr, weight_decay, batch_size, warmup_lr_init, min_lr,
                 normalize, eval_every, num_workers, device, max_train_batches, precision,
                 warmup_per_step, schedule_step (schedule.py)
    [launcher]   executor, jobs (local worker processes), threads (torch threads per job),
                 timeout_min, partition,
                 gpus_per_node, cpus_per_task, mem_gb, array_parallelism, runs_per_task,
                 slurm_extra, pack (train up to K compatible runs as one model: pack.py)
    [[methods]]  name*, label, config, grid, per_task, tasks, seeds, train, keep_adapter, eval_protocol (the
                 suite's unless set: a row whose source chose on val200, e.g. VPT's rows)

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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from heartbench.errors import UserError, closest, one_of, what_is
from heartbench.schedule import LEGACY_TRAIN as LEGACY_SCHEDULE
from heartbench.schedule import check_method_schedule, check_warmup

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
    # true: the warm-up and cosine counted in optimiser steps (heartbench/schedule.py), so a
    # short twin run trains its adapters before Heart-LoRA scores; false: per epoch (Table 9)
    "warmup_per_step": False,
    # "reference": timm's scheduler.step(epoch) after epoch `epoch`, as the reference loops
    # (PETL-ViT, FacT, RepAdapter): epochs 0 and 1 both train at warmup_lr_init.
    # "next_epoch": step(epoch + 1), heartbench's stepping before the key (schedule.LEGACY_TRAIN).
    "schedule_step": "reference",
}
PRECISIONS = ("fp32", "tf32", "bf16")
SCHEDULE_STEPS = ("reference", "next_epoch")
# NOAH's few-shot recipe (protocol.md; its argparse defaults): Mixup 0.8 / CutMix 1.0 with
# label smoothing 0.1, RandomErasing 0.25, no ColorJitter next to RandAugment (timm drops it).
# Only few-shot runs carry these keys, so VTAB runs keep their identity.
FEWSHOT_RECIPE: dict[str, Any] = {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,
                                  "reprob": 0.25, "color_jitter": 0.0}
FEWSHOT_TRAIN_DEFAULTS = {"lr": 5e-3, "normalize": True, **FEWSHOT_RECIPE}
# Keys that do not change a run's result: left out of its identity.
NON_RESULT_TRAIN_KEYS = ("num_workers", "device")
# Train keys added after the committed records, with the value that reproduces them:
# precision (fp32 before the key) and the schedule's keys (schedule.LEGACY_TRAIN). A record
# that lacks one is completed with it (rerun.spec_from_record), and a run's identity leaves
# the key out while it holds that value, so suites that set it keep their run ids. Few-shot
# records from before NOAH's recipe keys had ColorJitter 0.4, no erasing, no Mixup/CutMix
# and plain cross-entropy.
LEGACY_TRAIN: dict[str, Any] = {"precision": "fp32", **LEGACY_SCHEDULE}
LEGACY_FEWSHOT_TRAIN: dict[str, Any] = {"mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0,
                                        "reprob": 0.0, "color_jitter": 0.4}

SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "suite": {"name": str, "description": str, "benchmark": str, "data_root": str,
              "data_command": str,
              "tasks": list, "seeds": list, "eval_protocol": str, "shots": list,
              "plugins": list},
    "tasks": {},  # [tasks.NAME]: checked against CUSTOM_TASK_SCHEMA
    "backbone": {"name": str, "weights": str, "drop_path_rate": (int, float), "kwargs": dict,
                 "pre_logits": bool},
    "train": {k: (int, float) if isinstance(v, float) else type(v)
              for k, v in {**TRAIN_DEFAULTS, **FEWSHOT_RECIPE}.items()},
    "launcher": {"executor": str, "jobs": int, "threads": int, "timeout_min": int, "partition": str,
                 "gpus_per_node": int, "cpus_per_task": int, "mem_gb": (int, float), "array_parallelism": int,
                 "runs_per_task": int, "slurm_extra": dict, "pack": int},
    "methods": {"name": str, "label": str, "config": dict, "grid": dict, "per_task": dict,
                "tasks": list, "seeds": list, "train": dict, "keep_adapter": bool,
                "eval_protocol": str},
}
REQUIRED = {"suite": ("benchmark", "data_root"), "backbone": ("name",), "methods": ("name",)}
CUSTOM_TASK_SCHEMA: dict[str, type | tuple[type, ...]] = {"root": str, "num_classes": int,
                                                          "group": str}


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
    # false: the trained adapter file is deliberately not written (no command reads it, e.g.
    # the twins' Full fine-tuning: MBs per run); the record says so (``adapter.kept = false``). Not
    # part of run_id: it does not change the result.
    keep_adapter: bool = True
    # A plugin method's origin (plugins.Plugin.to_dict: module, file, sha256, how): a fresh
    # worker imports it from there; its sha256 is part of the identity. None: built in.
    plugin: dict[str, str] | None = None
    # A task declared in the suite ([tasks.NAME]: root, num_classes, group). None: registered.
    custom_task: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """What changes this run's result: hashed into run_id."""
        from heartbench.adapters.base import identity_config

        train = {k: v for k, v in self.train.items() if k not in NON_RESULT_TRAIN_KEYS
                 and not (k in LEGACY_TRAIN and v == LEGACY_TRAIN[k])}
        identity = {"benchmark": self.benchmark, "task": self.task, "shots": self.shots,
                    "method": self.method,
                    "method_config": identity_config(self.method, self.method_config),
                    "search": self.search, "backbone": self.backbone, "train": train,
                    "seed": self.seed, "eval_protocol": self.eval_protocol}
        # Only plugin methods and suite-declared tasks add keys: other runs keep their ids.
        if self.plugin:
            identity["plugin_sha256"] = self.plugin["sha256"]
        if self.custom_task:
            identity["custom_task"] = {"num_classes": self.custom_task["num_classes"]}
        return identity

    @property
    def searched(self) -> int:
        """Configurations this run trains before its final one: under eval_protocol "val"
        each point of its search grid (train800, scored on val200), else none."""
        return math.prod(len(v) for v in self.search.values()) if self.search else 0

    def describe(self) -> str:
        grid = " ".join(f"{k}={v}" for k, v in sorted(self.grid.items()))
        shots = f" shots={self.shots}" if self.shots is not None else ""
        return (f"{self.run_id}  {self.task:<22} {self.label:<18} seed={self.seed}{shots}"
                f" search={self.searched} {grid}").rstrip()

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
        raise UserError(f"suite file {path} {what_is(path)}; expected a TOML file")
    try:
        # utf-8-sig: a byte-order mark some editors write is not part of the TOML.
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: malformed TOML: {err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise UserError(f"suite file {path} cannot be read ({err.strerror})") from None


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
    from heartbench.data.tasks import get_benchmark, registered_tasks, resolve_task
    from heartbench.plugins import load_plugins, plugin_of

    s = raw["suite"]
    benchmark = s["benchmark"]
    try:
        get_benchmark(benchmark)
    except UserError as err:
        raise UserError(f"{path}: suite.benchmark: {err}") from None
    # Plugins before anything names a method; custom tasks before anything names a task.
    load_plugins(s.get("plugins", []), path.parent, f"{path}: suite.plugins")
    custom = _custom_tasks(path, benchmark, raw.get("tasks", {}))
    tasks_info = get_benchmark(benchmark)
    task_names = _task_list(path, "suite.tasks", s.get("tasks", ["all"]))
    if task_names == ["all"]:  # the registered tasks: another suite's declared ones are not ours
        task_names = list(registered_tasks(benchmark))
    tasks = [_task(path, "suite.tasks", benchmark, t, resolve_task).name for t in task_names]
    tasks += [t for t in custom if t not in tasks]  # a declared task runs: declaring says so
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
    suite = Suite(path=path, name=_suite_name(path, s), description=s.get("description", ""),
                  benchmark=benchmark, data_root=root, tasks=tasks, eval_protocol=protocol,
                  backbone=backbone, train=train, launcher=launcher,
                  data_command=s.get("data_command"))
    heads = None
    for i, entry in enumerate(raw["methods"]):
        where = f"methods[{i}]"
        method_tasks = [_task(path, f"{where}.tasks", benchmark, t, resolve_task).name
                        for t in _task_list(path, f"{where}.tasks", entry.get("tasks", tasks))]
        method_seeds = _int_list(path, f"{where}.seeds", entry.get("seeds", seeds))
        method_train = {**train, **entry.get("train", {})}
        method_protocol = entry.get("eval_protocol", protocol)
        if method_protocol not in EVAL_PROTOCOLS:
            raise UserError(f"{path}: {where}.eval_protocol:"
                            f" {one_of('protocol', method_protocol, EVAL_PROTOCOLS)}")
        _check_table(path, f"{where}.train", entry.get("train", {}), SCHEMA["train"])
        _check_train(path, f"{where}.train", method_train)
        heads = heads or _heads(path, backbone)
        for task in method_tasks:
            info = tasks_info[task]
            for config, grid, search in _expand(path, where, entry, benchmark, task,
                                                method_protocol, heads):
                check_method_schedule(path, where, entry["name"], config, search, method_train)
                for seed, k in itertools.product(method_seeds, shots):
                    spec = RunSpec(
                        suite=suite.name, benchmark=benchmark, data_root=root, task=task,
                        group=info.group, num_classes=info.num_classes, shots=k,
                        method=entry["name"], label=entry.get("label", _default_label(entry)),
                        method_config=config, grid=grid, search=search, backbone=backbone,
                        train=method_train, seed=seed, eval_protocol=method_protocol,
                        keep_adapter=entry.get("keep_adapter", True),
                        plugin=_plugin_dict(plugin_of(entry["name"])),
                        custom_task=custom.get(task))
                    check_warmup(path, where, spec)
                    suite.runs.append(_with_id(spec))
    _check_duplicates(path, suite.runs)
    return suite


def _suite_name(path: Path, table: dict[str, Any]) -> str:
    """suite.name, else the file's stem: the results folder's name, so a safe file name."""
    from heartbench.results import IGNORED_DIRS, SAFE_NAME

    name = table.get("name", path.stem)
    if name in IGNORED_DIRS:
        raise UserError(f"{path}: suite.name {name!r} is the name of a folder heartbench keeps"
                        " beside the suites' results (its records would be read by nothing);"
                        " choose another")
    if not SAFE_NAME.match(name) or name.endswith(".json"):
        where = "suite.name" if "name" in table else "suite.name (unset: the file's name)"
        raise UserError(f"{path}: {where} {name!r} names the results folder; expected letters,"
                        " digits, '.', '_', '-', '+' (no spaces), e.g. suite.name ="
                        f" {re.sub(r'[^A-Za-z0-9._+-]+', '_', name).strip('._+-') or 'my_suite'!r}")
    return name


def _plugin_dict(plugin: Any) -> dict[str, str] | None:
    return plugin.to_dict() if plugin is not None else None


def _custom_tasks(path: Path, benchmark: str, tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Declare the suite's own tasks ([tasks.NAME]) in the task registry; name -> what a
    RunSpec carries so that a worker declares it too."""
    from heartbench.data.tasks import CUSTOM_GROUP, declare_task, is_fewshot

    if not isinstance(tables, dict):
        raise UserError(f"{path}: [tasks] must hold tables [tasks.NAME], got {tables!r}")
    for name, table in tables.items():
        _check_table(path, f"tasks.{name}", table, CUSTOM_TASK_SCHEMA)
        for key in ("root", "num_classes"):
            if key not in table:
                raise UserError(f"{path}: missing required key tasks.{name}.{key}")
    if tables and is_fewshot(benchmark):
        raise UserError(f"{path}: [tasks.*] declares VTAB-layout tasks; benchmark {benchmark!r}"
                        " uses the few-shot layout")
    out: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        where = f"{path}: tasks.{name}"
        if table["num_classes"] < 2:
            raise UserError(f"{where}.num_classes must be >= 2, got {table['num_classes']}")
        root = Path(os.path.expandvars(os.path.expanduser(table["root"])))
        root = (path.parent / root).resolve()
        info = {"root": str(root), "num_classes": table["num_classes"],
                "group": table.get("group", CUSTOM_GROUP)}
        try:
            declare_task(benchmark, name, **info)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        out[name] = info
    return out


def activate(spec: Any) -> None:
    """Make what a planned run (a RunSpec or a record) names known in this process: its
    plugin imported (and checked unchanged), its custom task declared. Workers call it."""
    from heartbench.data.tasks import declare_task
    from heartbench.plugins import ensure_plugin

    get = spec.get if isinstance(spec, dict) else lambda key: getattr(spec, key, None)
    ensure_plugin(get("plugin"))
    custom = get("custom_task")
    if custom:
        declare_task(get("benchmark"), get("task"), **custom)


def _task(path: Path, where: str, benchmark: str, name: Any, resolve: Any) -> Any:
    if not isinstance(name, str):
        raise UserError(f"{path}: {where} entries must be strings, got {name!r}")
    try:
        return resolve(benchmark, name)
    except UserError as err:
        raise UserError(f"{path}: {where}: {err}") from None


# The largest seed every seeded generator takes (torch's: an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


def _int_list(path: Path, where: str, values: Any) -> list[int]:
    if not isinstance(values, list) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED for v in values):
        raise UserError(f"{path}: {where} must be a non-empty list of integers from 0 to"
                        f" 2**64 - 1, got {values!r}")
    return list(values)


def _task_list(path: Path, where: str, names: Any) -> list[Any]:
    """A task list as written: a non-empty list (an empty one would plan no runs at all)."""
    if not isinstance(names, list) or not names:
        raise UserError(f"{path}: {where} must be a non-empty list of task names, got {names!r}"
                        " (leave the key out for every task)")
    return names


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
    if train["schedule_step"] not in SCHEDULE_STEPS:
        raise UserError(f"{path}: {where}.schedule_step must be one of"
                        f" {', '.join(SCHEDULE_STEPS)}, got {train['schedule_step']!r}")
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
    out = {"name": table["name"], "weights": weights,
           "drop_path_rate": float(table.get("drop_path_rate", 0.1)),
           "kwargs": dict(table.get("kwargs", {}))}
    # The paper's representation layer (backbones.PreLogits): in the run's identity only when
    # present, so runs on backbones without it (every committed twin record) keep their ids.
    if table.get("pre_logits", False):
        out["pre_logits"] = True
    return out


def _heads(path: Path, backbone: dict[str, Any]) -> Any:
    """A weightless (meta-device) build of the backbone, for config checks like ne < heads."""
    from heartbench.backbones import meta_backbone

    try:
        built = meta_backbone(backbone["name"], pre_logits=backbone.get("pre_logits", False),
                              **backbone["kwargs"])
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
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
