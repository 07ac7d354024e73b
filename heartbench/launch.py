"""``python -m heartbench run SUITE.toml``: plan, check, dispatch through submitit, summarise.

Executors (submitit): ``local`` runs ``--jobs`` worker processes on this machine, each
working through its share of the runs; ``debug`` runs everything in this process;
``slurm`` submits one job-array task per run (``array_parallelism`` caps how many run at
once) and returns; ``auto`` picks slurm when ``sbatch`` is on PATH, else local.

Every job is checkpointable: on preemption or timeout submitit requeues it, and the run
resumes from its last completed epoch. A run whose record exists is skipped (``--force``
reruns it); a claim file per run keeps two launches from running the same run twice.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from heartbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="the suite TOML file, e.g. suites/vtab1k.toml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (one line per run) without touching data or models")
    parser.add_argument("--executor", choices=("auto", "local", "debug", "slurm"),
                        help="where runs execute (default: the suite's launcher.executor, else auto)")
    parser.add_argument("--results-dir", default="results", help="where records go (default: results)")
    parser.add_argument("--data-root", help="override the suite's data_root")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only runs whose task, method, label or run id matches this glob"
                             " (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun runs that already have a record")
    parser.add_argument("--jobs", type=int,
                        help="local executor: worker processes, the cores shared out as threads"
                             " (default: the suite's launcher.jobs, else 1)")
    parser.add_argument("--no-wait", action="store_true",
                        help="submit and return without waiting (always so for slurm)")


def main(args: argparse.Namespace) -> int:
    from heartbench.preflight import check_inputs, check_writable
    from heartbench.suite import load_suite

    started = time.time()
    suite = load_suite(args.suite, data_root=args.data_root)
    runs = select(suite.runs, args.only)
    if args.dry_run:
        print_plan(suite, runs, time.time() - started)
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    args.jobs = args.jobs or int(suite.launcher.get("jobs", 1))
    results_dir = Path(args.results_dir)
    # Inputs first, then the results directory: a mistake leaves nothing behind.
    check_inputs(suite, runs)
    check_writable(results_dir)
    todo = [r for r in runs if args.force or not is_done(results_dir, r, report=True)]
    print(f"{suite.name}: {len(runs)} runs, {len(runs) - len(todo)} already done,"
          f" {len(todo)} to run")
    if not todo:
        return 0
    executor = args.executor or suite.launcher["executor"]
    if executor == "auto":
        executor = "slurm" if shutil.which("sbatch") else "local"
    jobs, shards = submit(executor, suite, todo, results_dir, args)
    if executor == "slurm" or args.no_wait:
        print(f"submitted {len(jobs)} job(s) with the {executor} executor:"
              f" {', '.join(str(j.job_id) for j in jobs[:10])}{' ...' if len(jobs) > 10 else ''}")
        print("rerun the same command later to skip finished runs and resubmit the rest")
        return 0
    outcomes: list[dict[str, Any]] = []
    for job, shard in zip(jobs, shards):
        try:
            outcomes.extend(job.result())
        except Exception as err:  # the job itself died (killed, out of memory): say which runs
            reason = f"job {job.job_id} {job_failure(job, err)}; rerun the same command to resume"
            outcomes.extend({"run_id": s.run_id, "task": s.task, "label": s.label,
                             "status": "failed", "reason": reason}
                            for s in shard if not is_done(results_dir, s))
    return summarise(outcomes)


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
    epochs = sum(r.train["epochs"] for r in runs)
    print(f"plan: {len(runs)} runs ({tasks} tasks x {labels} methods/variants, grids and seeds"
          f" expanded), {epochs} training epochs in all; suite {suite.name}, benchmark"
          f" {suite.benchmark}, eval protocol {suite.eval_protocol}; planned in {seconds:.2f} s")


def is_done(results_dir: Path, run: Any, report: bool = False) -> bool:
    """Whether ``run`` has a usable record with status done.

    A truncated or foreign file in the record's place does not count: the run reruns and
    its record replaces that file (``report``: say so on stdout, naming the file).
    """
    from heartbench.results import record_path, validate_record

    path = record_path(results_dir, run.suite, run.run_id)
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        problem = validate_record(record)
    except (OSError, ValueError) as err:  # ValueError covers JSON and UTF-8 decoding errors
        problem = f"unreadable ({type(err).__name__}: {err})"
    if problem is None:
        return record["status"] == "done"
    if report:
        print(f"{path}: not a usable record ({problem}); rerunning {run.run_id},"
              " whose new record will replace this file")
    return False


# ---------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------
def submit(executor_name: str, suite: Any, todo: list[Any], results_dir: Path,
           args: argparse.Namespace) -> tuple[list[Any], list[list[Any]]]:
    """Submit the runs of ``todo``; return the jobs and the runs each job was given."""
    import submitit

    folder = results_dir / suite.name / ".submitit" / "%j"
    launcher = suite.launcher
    cluster = {"local": "local", "debug": "debug", "slurm": "slurm"}[executor_name]
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": int(launcher.get("timeout_min", 24 * 60)),
                              "name": f"heartbench-{suite.name}"}
    if cluster == "slurm":
        params.update(slurm_array_parallelism=int(launcher.get("array_parallelism", 32)),
                      cpus_per_task=int(launcher.get("cpus_per_task", 8)),
                      gpus_per_node=int(launcher.get("gpus_per_node", 1)),
                      mem_gb=launcher.get("mem_gb", 32))
        if "partition" in launcher:
            params["slurm_partition"] = launcher["partition"]
        if launcher.get("slurm_extra"):
            params["slurm_additional_parameters"] = dict(launcher["slurm_extra"])
        shards = [[run] for run in todo]  # one array task per run
    else:
        n = min(args.jobs, len(todo))
        shards = [todo[i::n] for i in range(n)]
    executor.update_parameters(**params)
    # A claim older than a job's time limit (plus slack) cannot belong to a live job.
    # Threads: Slurm gives each task cpus_per_task cores; local jobs share this machine's
    # cores, since oversubscribed BLAS threads spin and slow every job down many times.
    threads = int(launcher.get("cpus_per_task", 0)) if cluster == "slurm" else max(
        1, (os.cpu_count() or 1) // len(shards))
    job = RunShard(claim_max_age_s=params["timeout_min"] * 60 + 600, threads=threads)
    progress = cluster == "debug" and sys.stderr.isatty()
    jobs = executor.map_array(job, shards, [str(results_dir)] * len(shards),
                              [args.force] * len(shards), [progress] * len(shards))
    return jobs, shards


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
    failed = [o for o in outcomes if o["status"] == "failed"]
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


class RunShard(_Checkpointable):
    """Run a list of RunSpecs one after another; requeued as is on preemption.

    A requeued shard skips runs whose record exists and resumes the interrupted run from
    its epoch checkpoint, so preemption costs at most one epoch.
    """

    def __init__(self, claim_max_age_s: float = 25 * 3600, threads: int = 0) -> None:
        self.claim_max_age_s, self.threads = claim_max_age_s, threads

    def __call__(self, specs: list[Any], results_dir: str, force: bool, progress: bool
                 ) -> list[dict[str, Any]]:
        import torch

        from heartbench.train import execute

        if self.threads > 0:
            torch.set_num_threads(self.threads)

        outcomes = []
        for spec in specs:
            outcome = {"run_id": spec.run_id, "task": spec.task, "label": spec.label}
            if not force and is_done(Path(results_dir), spec):
                outcomes.append({**outcome, "status": "skipped"})
                continue
            claim_file = Path(results_dir) / spec.suite / f"{spec.run_id}.claim"
            with Claim(claim_file, self.claim_max_age_s) as claim:
                if not claim.held:
                    outcomes.append({**outcome, "status": "claimed"})
                    continue
                if not force and is_done(Path(results_dir), spec):  # finished meanwhile
                    outcomes.append({**outcome, "status": "skipped"})
                    continue
                try:
                    record = execute(spec, results_dir, progress=progress)
                except Exception as err:  # a crash in one run must not cost the others
                    # No record: its checkpoint stays, and the next launch resumes it.
                    traceback.print_exc()
                    outcomes.append({**outcome, "status": "failed",
                                     "reason": f"crashed ({type(err).__name__}: {err});"
                                               " see the job's log"})
                    continue
            error = record.get("error") or {}
            reason = f"epoch {error.get('epoch')}: {error.get('reason')}" if error else None
            outcomes.append({**outcome, "status": record["status"], "reason": reason})
        return outcomes


def _job_id() -> str:
    return os.environ.get("SLURM_ARRAY_JOB_ID", "") + "_" + os.environ.get(
        "SLURM_ARRAY_TASK_ID", os.environ.get("SLURM_JOB_ID", ""))


class Claim:
    """An exclusive claim file per run; a claim whose holder died is taken over.

    The file holds host, pid and Slurm job id. It is stale when its process is gone
    (same host), when it belongs to this very (requeued) Slurm job, or when it is older
    than ``max_age_s`` (another host: no job outlives its time limit, and a requeued job
    writes a fresh claim), so a claim left by a dead node is taken over eventually.
    """

    def __init__(self, path: Path, max_age_s: float = 25 * 3600) -> None:
        self.path, self.held, self.max_age_s = path, False, max_age_s

    def __enter__(self) -> Claim:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    return self
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        return self

    def _stale(self) -> bool:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return True  # torn claim: its writer died mid-write
        if holder.get("job") and holder.get("job") == _job_id() and holder["job"] != "_":
            return True
        if holder.get("host") == socket.gethostname():
            return not _alive(int(holder.get("pid", -1)))
        try:
            return time.time() - self.path.stat().st_mtime > self.max_age_s
        except OSError:
            return True

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
