"""The run bookkeeping every executor shares: which runs a launch selects, a run's record
(read, done), and the claim file that keeps two launches from running one run twice.

Below ``launch``, ``pack`` and ``status``, which all read it; it imports none of them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from heartbench.errors import UserError
from heartbench.processes import is_worker, process_start


def select(runs: list[Any], patterns: list[str] | None) -> list[Any]:
    """The runs whose task, method, label or run id matches one of ``patterns`` (globs); a
    pattern that matches no run is a mistake (a typo would silently run nothing)."""
    if not patterns:
        return runs

    def hit(run: Any, pattern: str) -> bool:
        return any(fnmatch.fnmatch(f, pattern) for f in (run.task, run.method, run.label,
                                                          run.run_id))
    for pattern in patterns:
        if not any(hit(r, pattern) for r in runs):
            tasks = ", ".join(sorted({r.task for r in runs}))
            labels = ", ".join(sorted({r.label for r in runs}))
            raise UserError(f"--only {pattern!r} matches no run (by task, method, label or run"
                            f" id); tasks: {tasks}; methods/labels: {labels}")
    return [r for r in runs if any(hit(r, p) for p in patterns)]


def read_record(results_dir: Path, run: Any, report: bool = False) -> dict[str, Any] | None:
    """``run``'s record if it is usable (any status), else None.

    A truncated or foreign file in the record's place does not count: the run reruns and
    its record replaces that file (``report``: say so on stdout, naming the file).
    """
    from heartbench.results import record_path, validate_record

    path = record_path(results_dir, run.suite, run.run_id)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        problem = validate_record(record)
    except (OSError, ValueError) as err:  # ValueError covers JSON and UTF-8 decoding errors
        problem = f"unreadable ({type(err).__name__}: {err})"
    if problem is None:
        return record
    if report:
        print(f"{path}: not a usable record ({problem}); rerunning {run.run_id},"
              " whose new record will replace this file")
    return None


def is_done(results_dir: Path, run: Any, report: bool = False) -> bool:
    """Whether ``run`` has a usable record with status done, from the same data and weights."""
    from heartbench.content import stale_reason
    from heartbench.results import done_adapter_problem

    record = read_record(results_dir, run, report)
    if record is None or record["status"] != "done":
        return False
    stale = stale_reason(record, run) or done_adapter_problem(results_dir, run, record)
    if stale and report:
        print(f"{run.run_id} ({run.task}, {run.label}): {stale}; rerunning it")
    return stale is None


def reuse_done(results_dir: Path, runs: list[Any]) -> dict[str, str]:
    """Give each of ``runs`` (not done in its own suite) the done record another suite's
    folder holds for the same run id; run id -> the suite it came from.

    The run id hashes everything that changes a result, not the suite, so such a record is
    this run's result. It is copied, not linked: the copy is this suite's record (its
    ``suite``, ``label`` and ``grid`` as this suite plans the run, ``reused_from`` naming the
    source), so it stays valid when the source is archived, deleted or checked out on a file
    system without links, and no reader sees one record under two suites. The adapter is
    hard-linked where the file system allows (same bytes, no extra space), else copied.
    """
    reused: dict[str, str] = {}
    for run in runs:
        source = _done_elsewhere(results_dir, run)
        if source is None:
            continue
        claim_file = results_dir / run.suite / f"{run.run_id}.claim"
        with Claim(claim_file) as claim:  # no worker of another launch trains it meanwhile
            if claim.held and not is_done(results_dir, run):
                _copy_record(results_dir, run, source)
                reused[run.run_id] = source
    return reused


def _done_elsewhere(results_dir: Path, run: Any) -> str | None:
    """The first other suite (by name) whose folder holds a done, verified record of
    ``run``'s id from the same data and weights, with its adapter file when it lists one."""
    from heartbench.results import IGNORED_DIRS, SAFE_NAME

    try:
        folders = sorted(p for p in results_dir.iterdir() if p.is_dir())
    except OSError:
        return None
    for folder in folders:
        name = folder.name
        if name in (run.suite, *IGNORED_DIRS) or not SAFE_NAME.match(name) \
                or not (folder / f"{run.run_id}.json").is_file():
            continue
        other = _in_suite(run, name)
        record = read_record(results_dir, other)
        if record is not None and record["run_id"] == run.run_id \
                and _adapter_there(folder, record) and is_done(results_dir, other):
            return name
    return None


def _adapter_there(folder: Path, record: dict[str, Any]) -> bool:
    """The record lists no adapter, or one plain file name that is a file in ``folder``."""
    adapter = record.get("adapter") or {}
    name = adapter.get("file") if isinstance(adapter, dict) else None
    if not name:
        return True
    return isinstance(name, str) and Path(name).name == name and (folder / name).is_file()


def _copy_record(results_dir: Path, run: Any, source: str) -> None:
    """The adapter (linked or copied, atomically), then the record: its existence says done."""
    import shutil

    from heartbench.results import write_record

    record = read_record(results_dir, _in_suite(run, source))
    assert record is not None
    adapter = (record.get("adapter") or {}).get("file")
    if adapter:
        src, dst = results_dir / source / adapter, results_dir / run.suite / adapter
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or none with links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    copy = {**record, "suite": run.suite, "label": run.label, "grid": run.grid,
            "reused_from": {"suite": source,
                            "record": f"{source}/{run.run_id}.json",
                            "label": record["label"]}}
    write_record(results_dir, copy, overwrite=True)


def _in_suite(run: Any, suite: str) -> Any:
    import dataclasses

    return dataclasses.replace(run, suite=suite)


def is_requeue_error(err: Exception) -> bool:
    """submitit's own signal handling failing inside a run (``scontrol requeue`` killed,
    "timed-out too many times"): the job's business, not a crash of this run."""
    from submitit.core.utils import UncompletedJobError

    return isinstance(err, (UncompletedJobError, subprocess.SubprocessError))


def _job_id() -> str:
    return os.environ.get("SLURM_ARRAY_JOB_ID", "") + "_" + os.environ.get(
        "SLURM_ARRAY_TASK_ID", os.environ.get("SLURM_JOB_ID", ""))


# A claim file that cannot be read is only taken for a dead writer's after this long: claims
# are linked into place complete, so only a crash of the file system leaves a torn one.
TORN_CLAIM_AGE_S = 60.0


class Claim:
    """An exclusive claim file per run; a claim whose holder died is taken over.

    The file holds host, pid, the process's start time and Slurm job id. It appears complete
    or not at all: its content is written to a temporary file, then hard-linked into place
    (the link fails if a claim exists). It is stale when it is older than ``max_age_s`` (no
    job outlives its time limit, and a requeued job writes a fresh claim), when it belongs to
    this very (requeued) Slurm job, or, on this host, when its pid is gone or is another
    process (another program, or the pid reused), so a claim left by a dead node or process
    is taken over eventually. A takeover happens under a second, equally atomic
    ``.takeover`` file, so two launches never both replace the same stale claim.
    """

    def __init__(self, path: Path, max_age_s: float = 25 * 3600) -> None:
        self.path, self.held, self.max_age_s = path, False, max_age_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id(),
                   "start": process_start(os.getpid())}

    def __enter__(self) -> Claim:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _link_new(self.path, self.me):
                self.held = True
                return self
            examined = _file_identity(self.path)
            if examined is None:  # released between our link and now: try again
                continue
            if not self._stale(_read_claim(self.path)):
                return self
            self._take_over(examined)
            return self
        return self

    def _take_over(self, examined: tuple[int, int]) -> None:
        """Replace the stale claim file ``examined`` (inode, mtime), under the takeover lock.

        Only that very file is replaced: if it was released and someone else linked a new
        claim meanwhile, writing over it would make two holders.
        """
        lock = self.path.with_name(self.path.name + ".takeover")
        if not _link_new(lock, self.me):
            if _age(lock) > TORN_CLAIM_AGE_S:  # a takeover whose taker died
                lock.unlink(missing_ok=True)
            return
        try:
            if _file_identity(self.path) == examined:  # still the stale claim we examined
                _write_over(self.path, self.me)
                self.held = True
            elif _link_new(self.path, self.me):  # it was released meanwhile
                self.held = True
        finally:
            lock.unlink(missing_ok=True)

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:  # torn or vanished
            return not self.path.exists() or _age(self.path) > TORN_CLAIM_AGE_S
        if holder.get("job") and holder.get("job") == _job_id() and holder["job"] != "_":
            return True
        return not _holder_live(holder, self.path, self.max_age_s)

    def __exit__(self, *exc: object) -> None:
        if self.held and _read_claim(self.path) == self.me:
            self.path.unlink(missing_ok=True)


def claim_holder(path: Path, max_age_s: float = 25 * 3600) -> dict[str, Any] | None:
    """The live holder of a claim file, or None (no claim, or a stale one)."""
    holder = _read_claim(path)
    if holder is None:
        return None
    return holder if _holder_live(holder, path, max_age_s) else None


def _holder_live(holder: dict[str, Any], path: Path, max_age_s: float) -> bool:
    """Whether the claim in ``path`` may still belong to a running worker: younger than a
    job's time limit (no job outlives it; a requeued one writes a fresh claim) and, on this
    host, naming the very process that wrote it (a live pid that is another program, or a
    reused pid, holds nothing)."""
    if _age(path) > max_age_s:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # another node: only the age can tell
    try:
        pid = int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return False
    return is_worker(pid, holder.get("start"))


def _read_claim(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime in ns) of ``path``, or None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _temp_with(path: Path, content: dict[str, Any]) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(content))
    return tmp


def _link_new(path: Path, content: dict[str, Any]) -> bool:
    """Create ``path`` holding ``content``, complete, unless it exists (atomic)."""
    tmp = _temp_with(path, content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(tmp.read_text())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _write_over(path: Path, content: dict[str, Any]) -> None:
    tmp = _temp_with(path, content)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
