"""Checks that run before anything is submitted: data, weights, the results folder.

Everything a worker could know to fail on belongs here, so that a mistake ends in one
line and exit code 2 before a job starts, and leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from heartbench.errors import MissingData, UserError, what_is


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


# What makes a benchmark's data, named in the one line when it is missing ({root}, {tasks},
# {tasks_option}: " --tasks a,b" unless the runs need every task of the benchmark).
DATA_COMMANDS: dict[str, str] = {
    "vtab1k": "make it with 'python -m heartbench data prepare vtab1k --out {root}{tasks_option}'"
              " (internet and pip install -e \".[tfds]\"), or point --data-root at your copy",
    "fewshot": "heartbench cannot build the few-shot copy (NOAH's lists and images: README,"
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


def check_inputs(suite: Any, runs: list[Any], deep: bool = False) -> None:
    """Data and weights problems surface here, before any job is submitted (``deep``:
    the manifest's deep checks too, ``run --verify-deep``)."""

    tasks = sorted({r.task for r in runs})
    # Tasks the suite declares ([tasks.NAME]) are the user's folders: checked, never written,
    # and not the benchmark's standard copy.
    own = sorted({r.task for r in runs if getattr(r, "custom_task", None)})
    standard = [t for t in tasks if t not in own]
    if suite.benchmark in ("synth", "vtab_mini", "fewshot_mini"):
        # Synthetic and twin data are deterministic, made from installed packages: write
        # each missing task rather than fail (a whole folder or none, if interrupted).
        from heartbench.data.twin import ensure_twin_task

        for task in standard:
            folder = Path(suite.data_root) / task
            if folder.is_symlink() and not folder.is_dir():
                raise UserError(f"{suite.benchmark} task folder {folder} {what_is(folder)};"
                                " expected a folder, or nothing (it is then written)")
            if not folder.is_dir():
                print(f"writing {suite.benchmark} task {task!r} to {suite.data_root}"
                      " (first use)", flush=True)
                ensure_twin_task(suite.benchmark, suite.data_root, task)
    try:
        _check_layout(suite, runs, tasks)
    except MissingData as err:
        hint = data_hint(suite, standard) if standard else None
        if hint and not (own and str(err).startswith("task ")):
            raise UserError(f"{err}; {hint}") from None
        raise
    from heartbench.data.verify import check_standard_copy  # vtab1k/fewshot: the manifest

    warning = check_standard_copy(suite.data_root, suite.benchmark, standard,
                                  sorted({r.shots for r in runs if r.shots}),
                                  sorted({r.seed for r in runs}), deep=deep)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    check_weights(suite)


def check_weights(suite: Any) -> None:
    """backbone.weights: a local file that fits the backbone, or timm's own weights, which
    are fetched here (into the Hugging Face cache the workers read) rather than in each job."""
    from heartbench.backbones import check_weights_file, fetch_timm_weights

    weights = suite.backbone["weights"]
    if weights == "timm":
        try:
            fetch_timm_weights(suite.backbone["name"], suite.backbone["kwargs"])
        except UserError as err:
            raise UserError(f"{suite.path}: backbone.weights = 'timm': {err}") from None
    elif weights is not None:
        check_weights_file(Path(weights), suite.backbone["name"], suite.backbone["kwargs"],
                           pre_logits=suite.backbone.get("pre_logits", False))


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
