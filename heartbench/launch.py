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
import io
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from heartbench.errors import UserError, message
from heartbench.runs import Claim, is_done, is_requeue_error, reuse_done, select

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
    from heartbench import plan, preflight, slurm
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
        return plan.dry_run(pf, time.time() - started)
    executor = preflight.ready(pf)
    args.jobs = args.jobs or int(suite.launcher.get("jobs", 1))
    runs = with_content(suite, runs)  # data fingerprint and weights hash, for is_done
    todo = [r for r in runs if args.force or not is_done(results_dir, r, report=True)]
    _say_plugin_changes(results_dir, todo)
    reused = {} if args.force else reuse_done(results_dir, todo)  # done by another suite
    todo = [r for r in todo if r.run_id not in reused]
    sources = ", ".join(sorted(set(reused.values())))
    print(f"{suite.name}: {len(runs)} runs, {len(runs) - len(todo) - len(reused)} already done,"
          + (f" {len(reused)} reused from {sources} (same run id; records copied),"
             if reused else "") + f" {len(todo)} to run")
    if not todo:
        return 0
    request = slurm.task_request(suite, todo) if executor == "slurm" else None
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


def _say_plugin_changes(results_dir: Path, todo: list[Any]) -> None:
    """One line per run that trains again because its plugin's source changed."""
    from heartbench.status import plugin_change

    for run in todo:
        why = plugin_change(results_dir, run)
        if why:
            print(f"{run.run_id} ({run.task}, {run.label}): {why}; running it")


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


# ---------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------
def submit(executor_name: str, suite: Any, todo: list[Any], results_dir: Path,
           args: argparse.Namespace, request: dict[str, Any] | None = None
           ) -> tuple[list[Any], list[list[Any]]]:
    """Submit the runs of ``todo``; return the jobs and the runs each job was given.

    A refused submission (sbatch's error) is one line, and leaves no file behind.
    """
    from heartbench.pack import group_packs
    from heartbench.status import write_launch

    suite_dir = results_dir / suite.name
    launcher = suite.launcher
    timeout_min = int(launcher.get("timeout_min", 24 * 60))
    pack = int(launcher.get("pack", 1))  # launcher.pack: runs trained as one model (pack.py)
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": f"heartbench-{suite.name}"}
    if executor_name == "slurm" and launcher.get("slurm_extra"):
        params["slurm_additional_parameters"] = dict(launcher["slurm_extra"])
    before = _snapshot(suite_dir)  # before submitit makes its folder
    try:
        executor, shards, threads = _executor(executor_name, suite_dir / ".submitit" / "%j",
                                              group_packs(todo, pack), params, request, args)
        # launcher.threads pins it (a record's numbers can depend on the thread count).
        threads = int(launcher.get("threads", threads))
        executor.update_parameters(**params)
        # A claim older than a job's time limit (plus slack) cannot belong to a live job.
        job = RunShard(claim_max_age_s=timeout_min * 60 + 600, threads=threads, pack=pack)
        progress = executor_name == "debug" and sys.stderr.isatty()
        # submitit prints sbatch's complaint itself: it goes into our one line instead.
        with contextlib.redirect_stderr(io.StringIO()), _children_ignore_sigint(executor_name):
            jobs = executor.map_array(job, shards, [str(results_dir)] * len(shards),
                                      [args.force] * len(shards), [progress] * len(shards))
    except Exception as err:
        _remove_new(suite_dir, before)
        if isinstance(err, OSError):  # e.g. a full disk: say where it could not write
            raise UserError(f"{executor_name} refused the submission: cannot write its job"
                            f" files under {suite_dir / '.submitit'} ({err.strerror or err})"
                            ) from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        said = [line for line in lines if "error" in line.lower()] or lines or [type(err).__name__]
        raise UserError(f"{executor_name} refused the submission: {said[-1]}") from None
    write_launch(suite_dir, executor_name, [
        {"job": str(j.job_id), "runs": [s.run_id for s in shard], "log": str(j.paths.stderr),
         "result": str(j.paths.result_pickle)} for j, shard in zip(jobs, shards)])
    return jobs, shards


def _executor(name: str, folder: Path, packs: list[list[Any]], params: dict[str, Any],
              request: dict[str, Any] | None, args: argparse.Namespace
              ) -> tuple[Any, list[list[Any]], int]:
    """submitit's executor for ``name``, the runs of each job, and each job's thread count;
    ``params`` gains the executor's own parameters."""
    import submitit

    if name == "slurm":
        assert request is not None
        per_task = request["runs_per_task"]
        todo = [run for p in packs for run in p]  # a pack's runs side by side
        shards = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
        params.update(slurm_array_parallelism=request["array_parallelism"],
                      cpus_per_task=request["cpus_per_task"], mem_gb=request["mem_gb"],
                      slurm_partition=request["partition"])
        if request["gpus_per_node"]:  # no gres request at all for CPU jobs
            params["gpus_per_node"] = request["gpus_per_node"]
        # Each requeue after a time limit counts down; a task of several runs may need many.
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=3 + 2 * per_task)
        return executor, shards, request["cpus_per_task"]
    n = min(args.jobs, len(packs))
    shards = [[run for p in packs[i::n] for run in p] for i in range(n)]
    executor = submitit.AutoExecutor(folder=folder, cluster=name)
    # Local jobs share this machine's cores: oversubscribed BLAS threads spin and slow
    # every job down many times.
    return executor, shards, max(1, (os.cpu_count() or 1) // len(shards))


@contextlib.contextmanager
def _children_ignore_sigint(executor: str) -> Iterator[None]:
    """Local job processes start with SIGINT ignored, so Ctrl-C to the terminal's process
    group reaches only this launcher (which stops the workers at a safe point, see
    :func:`interrupted`) and the workers' own handler (``_SafeStop``): submitit's controller
    process would otherwise die of it with a KeyboardInterrupt traceback."""
    if executor != "local" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
        self.depth, self.pending, self.stopping = 0, False, False
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

        if self.stopping:  # Ctrl-C reaches the worker, then the launcher's SIGTERM: stop once
            log(f"caught {signal.Signals(signum).name}: already stopping")
            return
        log(f"caught {signal.Signals(signum).name}: stopping at a safe point")
        self.stopping = True
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
        from heartbench.suite import activate

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        for spec in specs:  # a fresh worker imports the runs' plugins, declares their tasks
            activate(spec)
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
                if is_requeue_error(err):
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
