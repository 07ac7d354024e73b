"""Checks that run before anything is submitted: data, weights, the results folder, the
launcher and the device.

Everything a worker could know to fail on belongs here, so that a mistake ends before a job
starts and leaves nothing behind. Every check runs and every problem is named at once (one
line each, with its remedy), so a newcomer fixes them in one go rather than one run at a
time: :data:`CHECKS` is the list of checks, each a function from the :class:`Preflight` to
its :class:`Problem` s (a check that raises :class:`UserError` counts as one problem). A new
check is one function appended to :data:`CHECKS`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heartbench.errors import MissingData, Problems, UserError, what_is


@dataclass(frozen=True)
class Problem:
    """One thing that stops ``run``: what it concerns, the one-line message naming the
    file, key or path and what was expected, and (where one is known) what to do."""

    what: str  # "data", "weights", "results folder", "launcher", "device", ...
    message: str
    remedy: str = ""

    def line(self) -> str:
        return f"{self.message}; {self.remedy}" if self.remedy else self.message


@dataclass
class Preflight:
    """What the checks look at. ``resolve`` turns the asked executor into the one that will
    run (``launch.resolve_executor``); the launcher check stores it in ``executor``."""

    suite: Any
    runs: list[Any]
    results_dir: Path
    asked_executor: str = "local"
    resolve: Callable[[str], str] | None = None
    jobs: int | None = None
    deep: bool = False
    executor: str | None = None
    to_write: list[str] = field(default_factory=list)  # missing tasks of a writable benchmark

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.runs})


Check = Callable[[Preflight], Iterable[Problem]]


def check_writable(results_dir: Path, create: bool = True, what: str = "results directory"
                   ) -> None:
    """With ``create=False`` nothing is made: the nearest existing ancestor must be a
    writable directory (so later checks can still fail without leaving a folder)."""
    if not create:
        for path in (results_dir.absolute(), *results_dir.absolute().parents):
            if path.exists():
                break
            if path.is_symlink():  # a dangling link or a loop: nothing could be made there
                raise UserError(f"{what} {results_dir} is not writable: {path} {what_is(path)}")
        _writable_dir(f"{what} {results_dir}", path)
        return
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{what} {results_dir} is not writable ({err.strerror})") from None


def _writable_dir(what: str, path: Path) -> None:
    """``path`` (which exists) is a folder this user may write into, else one line."""
    if not path.is_dir():
        raise UserError(f"{what} is not writable: {path} {what_is(path)}, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(path) else "permission denied"
        raise UserError(f"{what} is not writable: {path} ({why})")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_results(results_dir: Path, suite: str, runs: list[Any]) -> None:
    """The suite's results folder and its launcher folder, if there, are writable folders, and
    nothing but a record file stands where a run's record, claim or checkpoint belongs (a
    folder there would cost a whole training before the record write failed)."""
    from heartbench.results import record_path

    folder = results_dir / suite
    for path in (folder, folder / ".submitit", folder / ".submitit" / "launches"):
        if path.exists() or path.is_symlink():
            _writable_dir(f"results folder of suite {suite}", path)
    if not folder.is_dir():
        return
    for run in runs:
        record = record_path(results_dir, suite, run.run_id)
        for path in (record, record.with_suffix(".claim")):
            if (path.exists() or path.is_symlink()) and not path.is_file():
                raise UserError(f"{path} {what_is(path)} where run {run.run_id}'s"
                                f" {path.suffix[1:]} file belongs; expected a file or nothing"
                                " (move it away)")


# --- data ----------------------------------------------------------------------------------

# --- data ----------------------------------------------------------------------------------

# What makes a benchmark's data, named in the one line when it is missing ({root}, {tasks},
# {tasks_option}: " --tasks a,b" unless the runs need every task of the benchmark).
DATA_COMMANDS: dict[str, str] = {
    "vtab1k": "make it with 'python -m heartbench data prepare vtab1k --out {root}{tasks_option}'"
              " (internet and pip install -e \".[tfds]\"), or point --data-root at your copy",
    "fewshot": "heartbench cannot build the few-shot copy (NOAH's lists and images: docs/data.md,"
               " 'Data and weights'); point --data-root at your copy",
}


def data_hint(suite: Any, tasks: list[str]) -> str | None:
    """The command that makes ``suite``'s data (suite.data_command, else the benchmark's)."""
    command = suite.data_command
    if command is not None:
        command = f"make it with '{command}'"
    else:
        command = DATA_COMMANDS.get(suite.benchmark)
    if command is None:
        return None
    from heartbench.data.tasks import get_benchmark

    every = set(tasks) >= set(get_benchmark(suite.benchmark))
    return command.format(root=suite.data_root, tasks=",".join(tasks),
                          tasks_option="" if every else f" --tasks {','.join(tasks)}")


def _selects_on_val(runs: list[Any]) -> bool:
    """Whether a run selects on val200 (eval_protocol "val", the suite's or a method's)."""
    return any(r.eval_protocol == "val" for r in runs)


def _check_layout(suite: Any, runs: list[Any], tasks: list[str]) -> None:
    """Every list file the runs read is there, well formed, and names existing images."""
    from heartbench.data.tasks import is_fewshot

    if is_fewshot(suite.benchmark):
        from heartbench.data.fewshot import validate_fewshot

        shots = sorted({r.shots for r in runs})
        seeds = sorted({r.seed for r in runs})
        # eval_protocol "val" selects on val_meta.list: it must be there before any job.
        splits = ("train", "val", "test") if _selects_on_val(runs) else ("train", "test")
        validate_fewshot(suite.data_root, suite.benchmark, tasks, shots, seeds, splits)
    else:
        from heartbench.data.vtab import validate_vtab

        splits = ("train800", "val200", "train800val200", "test") \
            if _selects_on_val(runs) else ("train800val200", "test")
        validate_vtab(suite.data_root, suite.benchmark, tasks, splits)


def _writable_benchmark(benchmark: str) -> bool:
    """Synthetic and twin data are deterministic, made from installed packages: ``run``
    writes a missing task rather than fail."""
    from heartbench.data.twin.ensure import WRITABLE

    return benchmark in WRITABLE


def _missing_line(suite: Any, missing: list[tuple[str, MissingData]], own: set[str]
                  ) -> Problem:
    """One line for every task with no data at all, with the command that makes the
    benchmark's (a task of the user's own has no such command)."""
    tasks = [t for t, _ in missing]
    standard = [t for t in tasks if t not in own]
    first = str(missing[0][1])
    if len(missing) > 1 and Path(suite.data_root).is_dir():
        first = (f"{len(missing)} tasks have no data under {suite.data_root}:"
                 f" {', '.join(tasks)} (first: {first})")
    return Problem("data", first, (data_hint(suite, standard) if standard else None) or "")


def check_data(pf: Preflight) -> list[Problem]:
    """The data of every task the runs use: missing data in one line with the command that
    makes it, a broken task one line each, then the standard-copy check (vtab1k, fewshot)."""
    suite = pf.suite
    tasks = pf.tasks
    # Tasks the suite declares ([tasks.NAME]) are the user's folders: checked, never written,
    # and not the benchmark's standard copy.
    own = {r.task for r in pf.runs if getattr(r, "custom_task", None)}
    problems: list[Problem] = []
    if _writable_benchmark(suite.benchmark):
        broken = []
        for task in tasks:
            folder = Path(suite.data_root) / task
            if task in own or folder.is_dir():
                continue
            if folder.is_symlink() or folder.exists():  # a dangling link, a loop, a file
                broken.append(task)
                problems.append(Problem("data", f"{suite.benchmark} task folder {folder}"
                                        f" {what_is(folder)}; expected a folder, or nothing"
                                        " (it is then written)"))
            else:
                pf.to_write.append(task)
        tasks = [t for t in tasks if t not in pf.to_write and t not in broken]
    if not tasks:
        return problems
    if not Path(suite.data_root).is_dir():  # one line for the whole root
        try:
            _check_layout(suite, pf.runs, tasks)
        except MissingData as err:
            return [_missing_line(suite, [(t, err) for t in tasks], own)]
    missing: list[tuple[str, MissingData]] = []
    good: list[str] = []
    for task in tasks:
        try:
            _check_layout(suite, pf.runs, [task])
            good.append(task)
        except MissingData as err:
            missing.append((task, err))
        except UserError as err:
            problems.append(Problem("data", str(err)))
    if missing:
        problems.insert(0, _missing_line(suite, missing, own))
    return problems + _standard_copy(pf, [t for t in good if t not in own])


def _standard_copy(pf: Preflight, tasks: list[str]) -> list[Problem]:
    """vtab1k / fewshot: each task against the manifest (warnings with
    HEARTBENCH_NONSTANDARD_DATA=1 go to stderr and are no problem)."""
    from heartbench.data.verify import check_standard_copy

    problems = []
    shots = sorted({r.shots for r in pf.runs if r.shots})
    seeds = sorted({r.seed for r in pf.runs})
    for task in tasks:
        try:
            warning = check_standard_copy(pf.suite.data_root, pf.suite.benchmark, [task],
                                          shots, seeds, deep=pf.deep)
        except UserError as err:
            problems.append(Problem("data", str(err)))
            continue
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return problems


def write_missing_data(pf: Preflight) -> None:
    """Write each missing task of a synthetic or twin benchmark (a whole folder or none, if
    interrupted), then check what was written as any other data."""
    if not pf.to_write:
        return
    from heartbench.data.twin import ensure_twin_task

    suite = pf.suite
    for task in pf.to_write:
        print(f"writing {suite.benchmark} task {task!r} to {suite.data_root} (first use)",
              flush=True)
        ensure_twin_task(suite.benchmark, suite.data_root, task)
    _check_layout(suite, pf.runs, pf.to_write)
    pf.to_write = []


# --- weights -------------------------------------------------------------------------------

# Where the checkpoints the shipped suites name come from (by file name).
_TIMM_INSTEAD = ("or set weights = \"timm\" in the suite's [backbone] to let timm download"
                 " {timm} (the same weights converted, needs internet; its runs get other run"
                 " ids than the original file's)")
KNOWN_WEIGHTS: dict[str, str] = {
    "ViT-B_16.npz": "the original ViT-B/16 ImageNet-21k checkpoint is published by Google in"
                    " the vision_transformer repository's bucket: 'gsutil cp"
                    " gs://vit_models/imagenet21k/ViT-B_16.npz {path}' (or download"
                    " https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz to"
                    " {path}); "
                    + _TIMM_INSTEAD.format(timm="vit_base_patch16_224.orig_in21k"),
    "swin_base_patch4_window7_224_22k.pth":
        "Microsoft's Swin-B ImageNet-22k checkpoint is published with the Swin-Transformer"
        " repository: download https://github.com/SwinTransformer/storage/releases/download/"
        "v1.0.0/swin_base_patch4_window7_224_22k.pth to {path}; "
        + _TIMM_INSTEAD.format(timm="swin_base_patch4_window7_224.ms_in22k"),
    "vit_mini_fmnist.safetensors": "it is committed in the repository's weights/ folder (run"
                                   " from the repository root), or make it with 'python -m"
                                   " heartbench pretrain --arch vit_mini'",
    "swin_mini_fmnist.safetensors": "it is committed in the repository's weights/ folder (run"
                                    " from the repository root), or make it with 'python -m"
                                    " heartbench pretrain --arch swin_mini'",
}


def weights_remedy(path: Path) -> str:
    """Where the checkpoint at ``path`` comes from, when heartbench knows it."""
    remedy = KNOWN_WEIGHTS.get(path.name)
    if remedy is None:
        return ("put the checkpoint there or correct backbone.weights; or set weights ="
                " \"timm\" to let timm download the backbone's pretrained weights")
    return remedy.format(path=path)


def check_weights(pf: Preflight) -> list[Problem]:
    """The weights file exists and fits the backbone tensor by tensor (timm's own weights:
    fetched now, or one line saying they cannot be)."""
    from heartbench.backbones import check_weights_file, fetch_timm_weights

    suite = pf.suite
    weights = suite.backbone["weights"]
    if weights is None:
        return []
    if weights == "timm":  # fetched here (into the cache the workers read), not in each job
        try:
            fetch_timm_weights(suite.backbone["name"], suite.backbone["kwargs"])
        except UserError as err:
            raise UserError(f"{suite.path}: backbone.weights = 'timm': {err}") from None
        return []
    path = Path(weights)
    if not path.exists() and not path.is_symlink():
        return [Problem("weights", f"{suite.path}: backbone.weights: weights file {path}"
                        " does not exist", weights_remedy(path))]
    # A folder, FIFO or device is named by what it is; a file is checked tensor by tensor.
    check_weights_file(path, suite.backbone["name"], suite.backbone["kwargs"],
                       pre_logits=suite.backbone.get("pre_logits", False))
    return []


# --- results folder, launcher, device ------------------------------------------------------

def check_results_folder(pf: Preflight) -> list[Problem]:
    """Writable (nothing is made here), and nothing but a file where a record belongs."""
    check_writable(pf.results_dir, create=False)
    check_results(pf.results_dir, pf.suite.name, pf.runs)
    return []


def check_launcher(pf: Preflight) -> list[Problem]:
    """The executor that will run (Slurm answers, or local), and ``--jobs`` fits it."""
    problems = []
    if pf.jobs is not None and pf.jobs < 1:
        problems.append(Problem("launcher", f"--jobs must be >= 1, got {pf.jobs}"))
    pf.executor = pf.resolve(pf.asked_executor) if pf.resolve else pf.asked_executor
    if pf.executor == "slurm" and pf.jobs is not None:
        problems.append(Problem("launcher", "--jobs sets local worker processes; on Slurm set"
                                " launcher.runs_per_task and launcher.array_parallelism in the"
                                " suite instead"))
    return problems


def check_device(suite: Any, runs: list[Any], executor: str) -> None:
    """Runs that will train on this machine (local, debug) and ask for CUDA need a CUDA
    device here (and bf16 one that supports it); a Slurm node is checked by its job."""
    if executor not in ("local", "debug"):
        return
    wants_cuda = [r for r in runs if r.train["device"] == "cuda"]
    if not wants_cuda:
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{suite.path}: train.device = 'cuda' but this machine has no CUDA"
                        f" device (executor {executor}); use device = 'auto' or 'cpu', or"
                        " run on a GPU machine")
    if any(r.train.get("precision") == "bf16" for r in wants_cuda) \
            and not torch.cuda.is_bf16_supported():
        raise UserError(f"{suite.path}: train.precision = 'bf16' but this machine's GPU"
                        f" ({torch.cuda.get_device_name(0)}) does not support bfloat16;"
                        " use precision = 'fp32' or 'tf32'")


def _device(pf: Preflight) -> list[Problem]:
    if pf.executor is not None:  # None: the launcher check failed, the device is unknown
        check_device(pf.suite, pf.runs, pf.executor)
    return []


# --- all of them ---------------------------------------------------------------------------

# (what, check): in this order; the launcher check before the device check it informs.
CHECKS: list[tuple[str, Check]] = [
    ("data", check_data),
    ("weights", check_weights),
    ("results folder", check_results_folder),
    ("launcher", check_launcher),
    ("device", _device),
]


def collect(pf: Preflight, checks: list[tuple[str, Check]] | None = None) -> list[Problem]:
    """Every problem of every check (a check that raises UserError is one problem)."""
    found: list[Problem] = []
    for what, check in CHECKS if checks is None else checks:
        try:
            found.extend(check(pf))
        except UserError as err:
            found.append(Problem(what, str(err)))
    return found


def problems_error(problems: list[Problem], dry_run: bool = False) -> Problems:
    """All problems as one error: a line each, and with more than one a closing count."""
    lines = [p.line() for p in problems]
    if len(problems) > 1:
        kinds = ", ".join(dict.fromkeys(p.what for p in problems))
        done = "the plan above was not run" if dry_run else "nothing was written or submitted"
        lines.append(f"{len(problems)} problems ({kinds}): {done}; fix them and rerun")
    return Problems(lines)


def ready(pf: Preflight) -> str:
    """Run every check; raise all problems at once, else write the missing twin data and
    return the executor that will run."""
    problems = collect(pf)
    if problems:
        raise problems_error(problems)
    write_missing_data(pf)
    return pf.executor or pf.asked_executor


def check_inputs(suite: Any, runs: list[Any], deep: bool = False) -> None:
    """Data and weights (all problems at once), then the missing twin data written."""
    pf = Preflight(suite, runs, Path("."), deep=deep)
    problems = collect(pf, CHECKS[:2])
    if problems:
        raise problems_error(problems)
    write_missing_data(pf)
