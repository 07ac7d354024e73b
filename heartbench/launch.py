"""``python -m heartbench run SUITE.toml``: plan, check, dispatch through submitit, watch,
summarise.

Executors (submitit): ``local`` runs ``--jobs`` worker processes on this machine, each
working through its share of the runs; ``debug`` runs everything in this process;
``slurm`` submits one job array whose tasks each run ``launcher.runs_per_task`` runs
(``array_parallelism`` caps how many tasks run at once); ``auto`` picks slurm when a Slurm
controller answers, else local (and refuses when ``sbatch`` exists but no controller answers).

``run`` waits by default, showing runs done / running / pending / failed / left with an ETA
(a bar on a terminal, a line per finished run in a log), then prints the same summary and
exit code for every executor; ``--no-wait`` returns after submission (``status`` tells
later). SIGINT or SIGTERM stops local workers at a safe point (never inside a checkpoint or
record write); a rerun resumes. On Slurm it only stops watching: the jobs keep running.

Every job is checkpointable: on preemption or timeout submitit requeues it, and the run
resumes from its last completed epoch. A run whose record exists is skipped (``--force``
reruns it); a claim file per run, taken atomically, keeps two launches from running the same
run twice.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from heartbench.errors import UserError, message
from heartbench.processes import pid_alive

# How often `run` looks at records, claims and the queue while it waits.
POLL_S = {"local": 1.0, "slurm": 3.0}
# How long stopped local workers get to reach their safe point before they are killed.
STOP_GRACE_S = 120.0
# How long the Slurm controller may stay silent before `run` stops watching.
SILENT_CONTROLLER_S = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="the suite TOML file, e.g. suites/vtab1k.toml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (one line per run), then every problem that would"
                             " stop the run (data, weights, results folder, launcher, device);"
                             " writes nothing")
    parser.add_argument("--executor", choices=("auto", "local", "debug", "slurm"),
                        help="where runs execute (default: the suite's launcher.executor, else auto)")
    parser.add_argument("--results-dir", default="results", help="where records go (default: results)")
    parser.add_argument("--data-root", help="override the suite's data_root")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only runs whose task, method, label or run id matches this glob"
                             " (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun runs that already have a record")
    parser.add_argument("--verify-deep", action="store_true",
                        help="vtab1k/fewshot: before submitting, also decode every image and look"
                             " for test images among the training images (as `data verify"
                             " --deep`; the counts and labels are always checked)")
    parser.add_argument("--jobs", type=int,
                        help="local executor: worker processes, the cores shared out as threads"
                             " (default: the suite's launcher.jobs, else 1); not for slurm")
    parser.add_argument("--no-wait", action="store_true",
                        help="return after submission (local, slurm); `heartbench status` tells"
                             " what the runs do")


def main(args: argparse.Namespace) -> int:
    from heartbench import preflight
    from heartbench.content import with_content
    from heartbench.preflight import check_writable
    from heartbench.suite import load_suite

    started = time.time()
    suite = load_suite(args.suite, data_root=args.data_root)
    runs = select(suite.runs, args.only)
    results_dir = Path(args.results_dir)
    # Every check (data, weights, results folder, launcher, device) runs and every problem
    # is named at once; only then is anything written (twin data, the results folder).
    pf = preflight.Preflight(suite, runs, results_dir,
                             args.executor or suite.launcher["executor"], resolve_executor,
                             args.jobs, args.verify_deep)
    if args.dry_run:
        return dry_run(pf, time.time() - started)
    executor = preflight.ready(pf)
    args.jobs = args.jobs or int(suite.launcher.get("jobs", 1))
    runs = with_content(suite, runs)  # data fingerprint and weights hash, for is_done
    todo = [r for r in runs if args.force or not is_done(results_dir, r, report=True)]
    print(f"{suite.name}: {len(runs)} runs, {len(runs) - len(todo)} already done,"
          f" {len(todo)} to run")
    if not todo:
        return 0
    request = slurm_request(suite, todo) if executor == "slurm" else None
    made = [p for p in (results_dir, *results_dir.parents) if not p.exists()]
    check_writable(results_dir)
    try:
        jobs, shards = submit(executor, suite, todo, results_dir, args, request)
    except UserError:
        for folder in made:  # a refused submission leaves no folder it made (innermost first)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if args.no_wait and executor != "debug":
        print(f"submitted {len(jobs)} job(s) with the {executor} executor:"
              f" {', '.join(str(j.job_id) for j in jobs[:10])}{' ...' if len(jobs) > 10 else ''}")
        print(f"`python -m heartbench status {args.suite} --results-dir {results_dir}` tells what"
              " they do; rerun the same command later to resume the rest")
        return 0
    if executor == "debug":
        outcomes = collect_local(jobs, shards, results_dir)
        if any(o["status"] == "stopped" for o in outcomes):
            print("interrupted: stopped at a safe point; rerun the same command to resume",
                  file=sys.stderr)
            return 130
        return summarise(outcomes)
    return watch(executor, jobs, shards, results_dir, todo)


def dry_run(pf: Any, seconds: float) -> int:
    """The plan, then every problem that would stop ``run`` (exit 2), else 0. Writes
    nothing: missing twin data is only announced."""
    from heartbench import preflight

    problems = preflight.collect(pf)
    if pf.to_write:
        print(f"note: {pf.suite.benchmark} tasks {', '.join(pf.to_write)} are not in"
              f" {pf.suite.data_root} yet: `run` writes them first")
    print_plan(pf.suite, pf.runs, seconds)
    if problems:
        raise preflight.problems_error(problems, dry_run=True)
    return 0


def resolve_executor(name: str) -> str:
    """``auto``: slurm when a controller answers, local when there is no Slurm at all."""
    import shutil

    from heartbench import slurm

    if name not in ("auto", "slurm"):
        return name
    if name == "auto" and not shutil.which("sbatch"):
        return "local"
    if not shutil.which("sbatch"):
        raise UserError("executor slurm: sbatch is not on PATH (no Slurm client here);"
                        " use --executor local")
    problem = slurm.controller_error()
    if problem is not None:
        raise UserError(f"executor {name}: no Slurm controller answers ({problem}); start it,"
                        " or pass --executor local")
    return "slurm"


def slurm_request(suite: Any, todo: list[Any]) -> dict[str, Any]:
    """The per-task request, checked against the cluster's nodes before anything is submitted."""
    from heartbench import slurm

    devices = {r.train["device"] for r in todo}
    device = "cuda" if "cuda" in devices else ("auto" if "auto" in devices else "cpu")
    request = slurm.resolve_request(suite.launcher, device, len(todo), slurm.nodes())
    if "jobs" in suite.launcher:
        print(f"note: launcher.jobs = {suite.launcher['jobs']} applies to local runs only;"
              " on Slurm launcher.runs_per_task and array_parallelism apply")
    tasks = -(-len(todo) // request["runs_per_task"])
    print(f"slurm: {tasks} array task(s) of up to {request['runs_per_task']} runs"
          f" (launcher.runs_per_task), each {request['cpus_per_task']} CPUs,"
          f" {request['mem_gb']} GB, {request['gpus_per_node']} GPUs,"
          f" {request['timeout_min']} min, partition {request['partition']}")
    return request


def select(runs: list[Any], patterns: list[str] | None) -> list[Any]:
    if not patterns:
        return runs
    def hit(run: Any) -> bool:
        fields = (run.task, run.method, run.label, run.run_id)
        return any(fnmatch.fnmatch(f, p) for p in patterns for f in fields)
    return [r for r in runs if hit(r)]


def print_plan(suite: Any, runs: list[Any], seconds: float) -> None:
    for run in runs:
        print(run.describe())
    tasks = len({r.task for r in runs})
    labels = len({r.label for r in runs})
    epochs = sum(r.train["epochs"] * phases(r) for r in runs)
    searched = sum(phases(r) - 1 for r in runs)
    search = (f", plus {searched} search trainings (each grid point on train800, scored on"
              " val200)") if searched else ""
    print(f"plan: {len(runs)} runs ({tasks} tasks x {labels} methods/variants, grids and seeds"
          f" expanded){search}, {epochs} training epochs in all; suite {suite.name}, benchmark"
          f" {suite.benchmark}, eval protocol {suite.eval_protocol}; planned in {seconds:.2f} s")


def phases(run: Any) -> int:
    """Trainings one run does: 1, or under eval_protocol "val" one per searched grid point
    and the final one (heartbench.train.select_on_val)."""
    search = getattr(run, "search", None) or {}
    return 1 + (math.prod(len(v) for v in search.values()) if search else 0)


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

    record = read_record(results_dir, run, report)
    if record is None or record["status"] != "done":
        return False
    stale = stale_reason(record, run)
    if stale and report:
        print(f"{run.run_id} ({run.task}, {run.label}): {stale}; rerunning it")
    return stale is None


# ---------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------
def submit(executor_name: str, suite: Any, todo: list[Any], results_dir: Path,
           args: argparse.Namespace, request: dict[str, Any] | None = None
           ) -> tuple[list[Any], list[list[Any]]]:
    """Submit the runs of ``todo``; return the jobs and the runs each job was given.

    A refused submission (sbatch's error) is one line, and leaves no file behind.
    """
    import submitit

    from heartbench.pack import group_packs
    from heartbench.status import write_launch

    suite_dir = results_dir / suite.name
    folder = suite_dir / ".submitit" / "%j"
    launcher = suite.launcher
    timeout_min = int(launcher.get("timeout_min", 24 * 60))
    pack = int(launcher.get("pack", 1))  # launcher.pack: runs trained as one model (pack.py)
    packs = group_packs(todo, pack)
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": f"heartbench-{suite.name}"}
    if executor_name == "slurm":
        assert request is not None
        per_task = request["runs_per_task"]
        todo = [run for p in packs for run in p]  # a pack's runs side by side
        shards = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
        params.update(slurm_array_parallelism=request["array_parallelism"],
                      cpus_per_task=request["cpus_per_task"], mem_gb=request["mem_gb"],
                      slurm_partition=request["partition"])
        if request["gpus_per_node"]:  # no gres request at all for CPU jobs
            params["gpus_per_node"] = request["gpus_per_node"]
        if launcher.get("slurm_extra"):
            params["slurm_additional_parameters"] = dict(launcher["slurm_extra"])
        # Each requeue after a time limit counts down; a task of several runs may need many.
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=3 + 2 * per_task)
        threads = request["cpus_per_task"]
    else:
        n = min(args.jobs, len(packs))
        shards = [[run for p in packs[i::n] for run in p] for i in range(n)]
        executor = submitit.AutoExecutor(folder=folder, cluster=executor_name)
        # Local jobs share this machine's cores: oversubscribed BLAS threads spin and slow
        # every job down many times.
        threads = max(1, (os.cpu_count() or 1) // len(shards))
    # launcher.threads pins it (a record's numbers can depend on the thread count).
    threads = int(launcher.get("threads", threads))
    executor.update_parameters(**params)
    # A claim older than a job's time limit (plus slack) cannot belong to a live job.
    job = RunShard(claim_max_age_s=timeout_min * 60 + 600, threads=threads, pack=pack)
    progress = executor_name == "debug" and sys.stderr.isatty()
    before = _snapshot(suite_dir)
    try:
        # submitit prints sbatch's complaint itself: it goes into our one line instead.
        with contextlib.redirect_stderr(io.StringIO()):
            jobs = executor.map_array(job, shards, [str(results_dir)] * len(shards),
                                      [args.force] * len(shards), [progress] * len(shards))
    except Exception as err:
        _remove_new(suite_dir, before)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        said = [line for line in lines if "error" in line.lower()] or lines or [type(err).__name__]
        raise UserError(f"{executor_name} refused the submission: {said[-1]}") from None
    write_launch(suite_dir, executor_name, [
        {"job": str(j.job_id), "runs": [s.run_id for s in shard], "log": str(j.paths.stderr),
         "result": str(j.paths.result_pickle)} for j, shard in zip(jobs, shards)])
    return jobs, shards


def _snapshot(folder: Path) -> set[Path] | None:
    """Every path under ``folder`` (None: it does not exist)."""
    return set(folder.rglob("*")) if folder.exists() else None


def _remove_new(folder: Path, before: set[Path] | None) -> None:
    """Remove what appeared under ``folder`` since :func:`_snapshot` (and ``folder`` itself
    when it was not there)."""
    if not folder.exists():
        return
    import shutil

    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in sorted(set(folder.rglob("*")) - before, key=lambda p: -len(p.parts)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Waiting: live progress, interruption, outcomes
# ---------------------------------------------------------------------------
class _Terminated(Exception):
    """SIGTERM to the launcher while it waits."""


def watch(executor: str, jobs: list[Any], shards: list[list[Any]], results_dir: Path,
          todo: list[Any]) -> int:
    """Follow the runs until every job has ended, then summarise (exit code as ``summarise``)."""
    from heartbench.status import Progress, job_states, run_states

    entries = [(executor, {"job": str(j.job_id), "runs": [s.run_id for s in shard],
                           "log": str(j.paths.stderr), "result": str(j.paths.result_pickle)})
               for j, shard in zip(jobs, shards)]
    launches = {run_id: entry for entry in entries for run_id in entry[1]["runs"]}
    progress = Progress(len(todo), {r.run_id: f"{r.task} {r.label}" for r in todo})
    previous = _on_sigterm()
    ended_polls, silent_since = 0, None
    try:
        while True:
            if executor == "local":
                states = {str(j.job_id): ("ENDED" if j.done() else "RUNNING", "") for j in jobs}
            else:
                states = job_states(entries)
            if states is None:  # the controller does not answer: keep waiting, for a while
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > SILENT_CONTROLLER_S:
                    progress.close()
                    print(f"the Slurm controller has not answered for {SILENT_CONTROLLER_S:.0f} s;"
                          " stopped watching (the jobs may still run; `heartbench status` tells)")
                    return 1
                time.sleep(POLL_S[executor])
                continue
            silent_since = None
            progress.update(run_states(results_dir, todo, launches, states))
            ended = all(s[0] == "ENDED" for s in states.values())
            # Slurm: a task seen ended twice in a row is not in the middle of a requeue.
            ended_polls = ended_polls + 1 if ended else 0
            if ended_polls >= (1 if executor == "local" else 2):
                break
            time.sleep(POLL_S[executor])
    except (KeyboardInterrupt, _Terminated) as err:
        progress.close()
        return interrupted(executor, jobs, results_dir, todo, isinstance(err, _Terminated))
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    if executor == "local":
        return summarise(collect_local(jobs, shards, results_dir))
    final = run_states(results_dir, todo, launches, states)
    return summarise(collect_slurm(jobs, shards, final))


def _on_sigterm() -> Any:
    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return signal.signal(signal.SIGTERM, handler)


def interrupted(executor: str, jobs: list[Any], results_dir: Path, todo: list[Any],
                term: bool) -> int:
    """SIGINT/SIGTERM while waiting: local workers stop at a safe point; Slurm jobs go on."""
    done = sum(is_done(results_dir, r) for r in todo)
    if executor == "slurm":
        ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
        print(f"stopped watching ({done}/{len(todo)} runs done); the Slurm job(s)"
              f" {', '.join(ids)} keep running (scancel to stop them; `heartbench status`"
              " tells what they do)")
        return 143 if term else 130
    # submitit's controller forwards SIGTERM to its worker, which stops at a safe point.
    # Ignore further signals meanwhile: a second Ctrl-C must not orphan the workers.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for job in jobs:
            if job._process is not None and job._process.poll() is None:
                job._process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(
                j._process is not None and j._process.poll() is None for j in jobs):
            time.sleep(0.2)
        for job in jobs:
            if job._process is not None and job._process.poll() is None:
                job._process.kill()
    finally:
        signal.signal(signal.SIGINT, old)
    done = sum(is_done(results_dir, r) for r in todo)
    print(f"interrupted: {len(jobs)} local worker(s) stopped at a safe point, {done}/{len(todo)}"
          " runs done; rerun the same command to resume the rest", file=sys.stderr)
    return 143 if term else 130


def collect_local(jobs: list[Any], shards: list[list[Any]], results_dir: Path
                  ) -> list[dict[str, Any]]:
    outcomes: list[dict[str, Any]] = []
    for job, shard in zip(jobs, shards):
        try:
            outcomes.extend(job.result())
        except Exception as err:  # the job itself died (killed, out of memory): say which runs
            reason = f"job {job.job_id} {job_failure(job, err)}; rerun the same command to resume"
            outcomes.extend({"run_id": s.run_id, "task": s.task, "label": s.label,
                             "status": "failed", "reason": reason}
                            for s in shard if not is_done(results_dir, s))
    return outcomes


def collect_slurm(jobs: list[Any], shards: list[list[Any]], final: dict[str, Any]
                  ) -> list[dict[str, Any]]:
    """Outcomes of ended array tasks, from what is on disk and in the queue: a record (done
    or failed), else the reason the task gave none (cancelled, time limit, out of memory,
    crash: see status.ended_reason); a run another launch holds is left to it."""
    outcomes: list[dict[str, Any]] = []
    for spec in (s for shard in shards for s in shard):
        outcome = {"run_id": spec.run_id, "task": spec.task, "label": spec.label}
        state = final[spec.run_id]
        if state.state == "done":
            outcomes.append({**outcome, "status": "done", "reason": None})
        elif state.state in ("failed", "cancelled"):
            outcomes.append({**outcome, "status": "failed", "reason": state.reason or state.state})
        else:  # running or pending under another launch's claim
            outcomes.append({**outcome, "status": "claimed"})
    return outcomes


def job_failure(job: Any, err: Exception) -> str:
    """One line on why ``job`` gave no result, pointing at its log."""
    from submitit.core.utils import UncompletedJobError

    if isinstance(err, UncompletedJobError):  # the worker was killed or crashed hard
        try:
            where = f" (log: {job.paths.stderr})"
        except Exception:  # a job without log paths
            where = ""
        return f"ended without a result: its worker was killed or crashed{where}"
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"failed: {lines[-1].strip() if lines else type(err).__name__}"


def summarise(outcomes: list[dict[str, Any]]) -> int:
    """Print what happened to every run; exit code 1 if any failed."""
    failed = [o for o in outcomes if o["status"] in ("failed", "stopped")]
    done = [o for o in outcomes if o["status"] == "done"]
    skipped = [o for o in outcomes if o["status"] == "skipped"]
    claimed = [o for o in outcomes if o["status"] == "claimed"]
    print(f"finished: {len(done)} done, {len(failed)} failed, {len(skipped)} skipped"
          + (f", {len(claimed)} left to another launch that is running them" if claimed else ""))
    for o in failed:
        print(f"  FAILED {o['run_id']} {o['task']} {o['label']}: {o['reason']}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# What a job runs
# ---------------------------------------------------------------------------
try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency
    _Checkpointable = object  # type: ignore[assignment,misc]


class Stopped(BaseException):
    """SIGTERM or SIGINT reached a worker: it stops at the next safe point.

    A BaseException, so that no ``except Exception`` (a run crash) can swallow it.
    """


class _SafeStop:
    """SIGTERM and SIGINT handlers for a worker: raise :class:`Stopped` at once, except
    inside a critical section (a checkpoint, record or adapter write, the clean-up after a record),
    whose end raises it instead. An interrupted epoch is redone from its checkpoint, which
    holds every RNG state, so the resumed record equals an uninterrupted run's."""

    def __init__(self) -> None:
        self.depth, self.pending = 0, False
        self.saved: dict[int, Any] = {}
        self.patched: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> _SafeStop:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.saved[sig] = signal.signal(sig, self._handler)
        import heartbench.results
        import heartbench.train

        for module, name in ((heartbench.train, "save_checkpoint"), (heartbench.train, "_cleanup"),
                             (heartbench.train, "save_adapter"),
                             (heartbench.results, "write_record")):
            original = getattr(module, name)
            self.patched.append((module, name, original))
            setattr(module, name, self._critical(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)
        for module, name, original in self.patched:
            setattr(module, name, original)

    def _handler(self, signum: int, frame: Any) -> None:
        from heartbench.train import log

        log(f"caught {signal.Signals(signum).name}: stopping at a safe point")
        if self.depth:
            self.pending = True
        else:
            raise Stopped()

    def _critical(self, fn: Any) -> Any:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if not self.depth and self.pending:
                    self.pending = False
                    raise Stopped()
        return guarded


def _is_requeue_error(err: Exception) -> bool:
    """submitit's own signal handling failing inside a run (``scontrol requeue`` killed,
    "timed-out too many times"): the job's business, not a crash of this run."""
    from submitit.core.utils import UncompletedJobError

    return isinstance(err, (UncompletedJobError, subprocess.SubprocessError))


class RunShard(_Checkpointable):
    """Run a list of RunSpecs one after another; requeued as is on preemption.

    A requeued shard skips runs whose record exists and resumes the interrupted run from
    its epoch checkpoint, so preemption costs at most one epoch.
    """

    def __init__(self, claim_max_age_s: float = 25 * 3600, threads: int = 0, pack: int = 1
                 ) -> None:
        self.claim_max_age_s, self.threads, self.pack = claim_max_age_s, threads, pack

    def __call__(self, specs: list[Any], results_dir: str, force: bool, progress: bool
                 ) -> list[dict[str, Any]]:
        import torch

        from heartbench.pack import consecutive_packs, run_pack

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        outcomes: list[dict[str, Any]] = []
        # SIGTERM (Slurm sends it on scancel, requeue, preemption, and at the time limit
        # after USR2 has requeued) and SIGINT stop the shard at a safe point: it exits at
        # once instead of training on until Slurm's SIGKILL; a requeued task resumes.
        with _SafeStop():
            try:
                for group in consecutive_packs(specs, getattr(self, "pack", 1)):
                    if len(group) > 1:  # launcher.pack: trained as one model (pack.py)
                        outcomes += run_pack(self, group, Path(results_dir), force, progress)
                    else:
                        outcomes.append(self._one(group[0], Path(results_dir), force, progress))
            except Stopped:
                from heartbench.train import log

                log(f"stopped: {len(specs) - len(outcomes)} run(s) of this job left to a rerun")
                outcomes += [{"run_id": s.run_id, "task": s.task, "label": s.label,
                              "status": "stopped", "reason": "stopped by a signal; rerun to"
                              " resume"} for s in specs[len(outcomes):]]
        return outcomes

    def _one(self, spec: Any, results_dir: Path, force: bool, progress: bool) -> dict[str, Any]:
        from heartbench.train import execute

        outcome = {"run_id": spec.run_id, "task": spec.task, "label": spec.label}
        if not force and is_done(results_dir, spec):
            return {**outcome, "status": "skipped"}
        claim_file = results_dir / spec.suite / f"{spec.run_id}.claim"
        with Claim(claim_file, self.claim_max_age_s) as claim:
            if not claim.held:
                return {**outcome, "status": "claimed"}
            if not force and is_done(results_dir, spec):  # finished meanwhile
                return {**outcome, "status": "skipped"}
            try:
                record = execute(spec, results_dir, progress=progress)
            except Exception as err:  # a crash in one run must not cost the others
                if _is_requeue_error(err):
                    raise
                # No record: its checkpoint stays, and the next launch resumes it.
                if isinstance(err, UserError):  # e.g. a full disk: its one line says it all
                    return {**outcome, "status": "failed", "reason": message(err)}
                traceback.print_exc()
                return {**outcome, "status": "failed", "reason": f"crashed ({type(err).__name__}:"
                        f" {message(err)}); see the job's log"}
        error = record.get("error") or {}
        reason = f"epoch {error.get('epoch')}: {error.get('reason')}" if error else None
        return {**outcome, "status": record["status"], "reason": reason}


def _job_id() -> str:
    return os.environ.get("SLURM_ARRAY_JOB_ID", "") + "_" + os.environ.get(
        "SLURM_ARRAY_TASK_ID", os.environ.get("SLURM_JOB_ID", ""))


# A claim file that cannot be read is only taken for a dead writer's after this long: claims
# are linked into place complete, so only a crash of the file system leaves a torn one.
TORN_CLAIM_AGE_S = 60.0


class Claim:
    """An exclusive claim file per run; a claim whose holder died is taken over.

    The file holds host, pid and Slurm job id. It appears complete or not at all: its content
    is written to a temporary file, then hard-linked into place (the link fails if a claim
    exists). It is stale when its process is gone (same host), when it belongs to this very
    (requeued) Slurm job, or when it is older than ``max_age_s`` (another host: no job
    outlives its time limit, and a requeued job writes a fresh claim), so a claim left by a
    dead node is taken over eventually. A takeover happens under a second, equally atomic
    ``.takeover`` file, so two launches never both replace the same stale claim.
    """

    def __init__(self, path: Path, max_age_s: float = 25 * 3600) -> None:
        self.path, self.held, self.max_age_s = path, False, max_age_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id()}

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
        if holder.get("host") == socket.gethostname():
            return not pid_alive(int(holder.get("pid", -1)))
        return _age(self.path) > self.max_age_s

    def __exit__(self, *exc: object) -> None:
        if self.held and _read_claim(self.path) == self.me:
            self.path.unlink(missing_ok=True)


def claim_holder(path: Path, max_age_s: float = 25 * 3600) -> dict[str, Any] | None:
    """The live holder of a claim file, or None (no claim, or a stale one)."""
    holder = _read_claim(path)
    if holder is None:
        return None
    if holder.get("host") == socket.gethostname():
        return holder if pid_alive(int(holder.get("pid", -1))) else None
    return holder if _age(path) <= max_age_s else None


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
