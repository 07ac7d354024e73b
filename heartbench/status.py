"""``python -m heartbench status SUITE``: what each run of a suite is doing.

A run's state comes from what is on disk and in the queue, never from the launcher's memory,
so any shell can ask and a finished launcher leaves nothing to consult:

- its record: ``done``, or ``failed`` with the recorded reason (e.g. a diverged loss), or
  ``stale`` when its data or weights changed since it ran (``run`` trains it again);
- its claim file, held by a live process: ``running``;
- the launch that submitted it (``.submitit/launches/*.json``, written at submission) and
  that job's state: ``pending`` (with Slurm's reason, or behind earlier runs of its task),
  ``requeued`` (pending again after it started), ``cancelled``, or ``failed`` with the
  reason from the job's result or log (time limit, out of memory, the last line of a crash);
- otherwise ``not submitted``.

The same function feeds the live progress of ``run`` (see :class:`Progress`).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heartbench.errors import UserError, what_is
from heartbench.processes import pid_alive

LAUNCHES = "launches"  # under <results>/<suite>/.submitit/


@dataclass(frozen=True)
class RunState:
    state: str  # done | failed | running | pending | requeued | cancelled | not submitted
    reason: str = ""
    job: str = ""


# ---------------------------------------------------------------------------
# Launch manifests: which job holds which runs
# ---------------------------------------------------------------------------
def write_launch(suite_dir: Path, executor: str, jobs: list[dict[str, Any]]) -> Path:
    """Record a submission: ``jobs`` holds ``{"job": id, "runs": [...], "log": path}``."""
    folder = suite_dir / ".submitit" / LAUNCHES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.time_ns()}-{jobs[0]['job'] if jobs else 'none'}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"executor": executor, "submitted": time.time(), "jobs": jobs}))
    os.replace(tmp, path)
    return path


def read_launches(suite_dir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """run id -> (executor, job entry) of the newest launch that submitted it."""
    held: dict[str, tuple[str, dict[str, Any]]] = {}
    folder = suite_dir / ".submitit" / LAUNCHES
    for _, path in sorted(_launch_files(folder)):
        try:
            launch = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        jobs = launch.get("jobs") if isinstance(launch, dict) else None
        for job in jobs if isinstance(jobs, list) else []:
            runs = job.get("runs") if isinstance(job, dict) else None
            for run_id in runs if isinstance(runs, list) and "job" in job else []:
                held[str(run_id)] = (str(launch.get("executor", "?")), job)
    return held


def _launch_files(folder: Path) -> list[tuple[int, Path]]:
    """(submission time, path) of the launch manifests :func:`write_launch` wrote; any other
    file there is named once on stderr and left alone."""
    found = []
    for path in folder.glob("*.json"):
        stamp = path.name.split("-")[0]
        if stamp.isdigit():
            found.append((int(stamp), path))
        else:
            print(f"note: ignored {path}: not a launch manifest (written by `run` as"
                  " <time>-<job>.json)", file=sys.stderr)
    return found


# ---------------------------------------------------------------------------
# Job states
# ---------------------------------------------------------------------------
def job_states(entries: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, str]] | None:
    """job id -> (state, reason); ``ENDED`` when the job is no longer known to run.

    None when the Slurm controller does not answer (states unknown, not ended).
    """
    from heartbench import slurm

    states: dict[str, tuple[str, str]] = {}
    slurm_jobs = sorted({e["job"] for ex, e in entries if ex == "slurm"})
    if slurm_jobs:
        arrays = sorted({j.split("_")[0] for j in slurm_jobs})
        found = slurm.queue(arrays)
        if found is None:
            return None
        for job in slurm_jobs:
            state, reason = found.get(job, ("ENDED", ""))
            states[job] = ("ENDED", state) if state in slurm.ENDED else (state, reason)
    for executor, entry in entries:
        if executor != "slurm":  # local: the job id is the pid of submitit's controller
            pid = int(entry["job"]) if str(entry["job"]).isdigit() else -1
            states[entry["job"]] = ("RUNNING", "") if pid_alive(pid) else ("ENDED", "")
    return states


def ended_reason(entry: dict[str, Any], slurm_state: str, run_id: str) -> RunState:
    """Why a job that has ended left ``run_id`` without a record."""
    job = entry["job"]
    log = Path(entry.get("log", ""))
    text = _tail(log)
    if slurm_state == "CANCELLED" or " CANCELLED AT " in text:
        return RunState("cancelled", f"job {job} was cancelled; rerun to resume", job)
    if slurm_state == "TIMEOUT" or "DUE TO TIME LIMIT" in text:
        return RunState("failed", f"job {job} reached its time limit (launcher.timeout_min)"
                                  "; rerun to resume", job)
    if slurm_state == "OUT_OF_MEMORY" or "oom-kill" in text.lower():
        return RunState("failed", f"job {job} ran out of memory (launcher.mem_gb)", job)
    result = _result(Path(entry.get("result", "")))
    if result is not None:
        kind, value = result
        if kind == "error":
            lines = [line for line in str(value).strip().splitlines() if line.strip()]
            last = lines[-1].strip() if lines else "an error"
            return RunState("failed", f"job {job} failed: {last} (log: {log})", job)
        for outcome in value or []:
            if outcome.get("run_id") == run_id and outcome.get("status") == "failed":
                return RunState("failed", outcome.get("reason") or "failed", job)
            if outcome.get("run_id") == run_id and outcome.get("status") == "stopped":
                return RunState("cancelled", f"stopped (job {job}); rerun to resume", job)
    return RunState("failed", f"job {job} ended without a result: its worker was killed or"
                              f" crashed (log: {log}); rerun to resume", job)


def _tail(path: Path, size: int = 20000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _result(path: Path) -> tuple[str, Any] | None:
    try:
        with path.open("rb") as f:
            result = pickle.load(f)
    except Exception:  # missing, torn or unloadable: no result to read
        return None
    return result if isinstance(result, tuple) and len(result) == 2 else None


# ---------------------------------------------------------------------------
# Run states
# ---------------------------------------------------------------------------
def run_states(results_dir: Path, runs: list[Any],
               launches: dict[str, tuple[str, dict[str, Any]]] | None = None,
               jobs: dict[str, tuple[str, str]] | None = None) -> dict[str, RunState]:
    """The state of every run in ``runs`` (see the module docstring)."""
    from heartbench.content import stale_reason
    from heartbench.results import done_adapter_problem
    from heartbench.runs import claim_holder, read_record

    states: dict[str, RunState] = {}
    for run in runs:
        suite_dir = results_dir / run.suite
        record = read_record(results_dir, run)
        if record is not None:
            error = record.get("error") or {}
            stale = stale_reason(record, run) or done_adapter_problem(results_dir, run, record)
            if record["status"] == "done":  # stale: `run` would train it again
                source = (record.get("reused_from") or {}).get("suite")
                states[run.run_id] = RunState("stale", stale) if stale else RunState(
                    "done", f"from {source}" if source else "")
            else:
                states[run.run_id] = RunState(
                    "failed", f"epoch {error.get('epoch')}: {error.get('reason')}")
            continue
        holder = claim_holder(suite_dir / f"{run.run_id}.claim")
        if holder is not None:
            done = epochs_done(suite_dir, run.run_id)
            epoch = f"epoch {done}/{run.train['epochs']}, " if done is not None else ""
            states[run.run_id] = RunState("running", f"{epoch}pid {holder.get('pid')} on"
                                          f" {holder.get('host')}", holder.get("job", ""))
            continue
        launch = (launches or {}).get(run.run_id)
        if launch is None:
            states[run.run_id] = RunState("not submitted", plugin_change(results_dir, run) or "")
            continue
        executor, entry = launch
        job = entry["job"]
        state, reason = (jobs or {}).get(job, ("UNKNOWN", ""))
        if state == "ENDED":
            states[run.run_id] = ended_reason(entry, reason, run.run_id)
        elif state == "PENDING":
            started = Path(entry.get("log", "")).exists()
            states[run.run_id] = RunState("requeued" if started else "pending",
                                          f"job {job}: {reason}", job)
        elif state in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
            states[run.run_id] = RunState("requeued", f"job {job}", job)
        elif state == "UNKNOWN":
            states[run.run_id] = RunState("pending", "job state unknown", job)
        else:  # its task runs, and this run waits behind the task's earlier runs
            states[run.run_id] = RunState("pending", f"job {job} {state.lower()}, earlier runs"
                                          " of its task first", job)
    return states


def plugin_change(results_dir: Path, run: Any) -> str | None:
    """Why a plugin method's run has a new id: a record of the same run (task, label, seed,
    config) made with another version of its plugin's source. None when there is none."""
    plugin = getattr(run, "plugin", None)
    if not plugin:
        return None
    same = ("task", "method", "label", "seed", "shots", "grid", "method_config")
    for path in sorted((results_dir / run.suite).glob("*.json")):
        if path.stem == run.run_id:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        old = record.get("plugin") if isinstance(record, dict) else None
        if not isinstance(old, dict) or old.get("sha256") == plugin["sha256"]:
            continue
        if all(record.get(k) == getattr(run, k) for k in same):
            name = Path(plugin["file"]).name if plugin.get("file") else plugin["module"]
            return (f"plugin source changed: {name} sha256 {str(old.get('sha256'))[:12]} ->"
                    f" {plugin['sha256'][:12]} since {record.get('run_id', path.stem)} ran"
                    f" ({record.get('status')})")
    return None


def epochs_done(suite_dir: Path, run_id: str) -> int | None:
    """Epochs a running run has finished: its newest ``<ckpt>.epoch`` marker (written by
    ``train.write_epoch_marker`` beside each checkpoint), or None before its first."""
    best = None
    for marker in suite_dir.glob(f"{run_id}.*ckpt.epoch"):
        try:
            done = int(marker.read_text().strip())
        except (OSError, ValueError):  # gone (the run ended) or being replaced
            continue
        best = done if best is None else max(best, done)
    return best


# ---------------------------------------------------------------------------
# Progress of `run`
# ---------------------------------------------------------------------------
FINAL = ("done", "failed", "cancelled")


class Progress:
    """Runs done / running / failed / left (yet to start) with an ETA: a tqdm bar on a
    terminal; on a log (not a TTY) one line per finished run and per requeue, nothing else."""

    def __init__(self, total: int, labels: dict[str, str], stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.total, self.labels = total, labels
        self.seen: dict[str, str] = {}
        self.bar = None
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=self.stream, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}]"
                                       "{postfix}")

    def update(self, states: dict[str, RunState]) -> None:
        counts: dict[str, int] = {}
        for run_id, st in states.items():
            counts[st.state] = counts.get(st.state, 0) + 1
            before = self.seen.get(run_id)
            if st.state != before:
                self.seen[run_id] = st.state
                self._event(run_id, st, before)
        finished = sum(counts.get(s, 0) for s in FINAL)
        if self.bar is not None:
            self.bar.n = finished
            self.bar.set_postfix_str(self._counts(counts) + self._epochs(states), refresh=False)
            self.bar.refresh()

    def _event(self, run_id: str, st: RunState, before: str | None) -> None:
        if st.state not in FINAL and st.state != "requeued":
            return
        if st.state == "requeued" and before == "requeued":
            return
        done = sum(1 for s in self.seen.values() if s in FINAL)
        why = f": {st.reason}" if st.reason and st.state != "done" else ""
        line = f"[{done}/{self.total}] {st.state} {run_id} {self.labels.get(run_id, '')}{why}"
        if self.bar is not None:
            if st.state != "done":
                self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _epochs(self, states: dict[str, RunState], most: int = 2) -> str:
        """Where the first running runs stand, e.g. ``; colors LoRA epoch 3/6``."""
        shown = [f"{self.labels.get(run_id, run_id)} {st.reason.split(',')[0]}"
                 for run_id, st in states.items()
                 if st.state == "running" and st.reason.startswith("epoch ")][:most]
        return "; " + "; ".join(shown) if shown else ""

    @staticmethod
    def _counts(counts: dict[str, int]) -> str:
        order = ("done", "running", "pending", "requeued", "failed", "cancelled")
        left = sum(v for k, v in counts.items() if k not in FINAL and k != "running")
        parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
        return ", ".join(parts + [f"{left} left"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="the suite TOML file that was run")
    parser.add_argument("--results-dir", default="results",
                        help="where its records go (default: results)")
    parser.add_argument("--data-root", help="the data_root override the suite was run with")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="only runs whose task, method, label or run id matches (repeatable)")
    parser.add_argument("--archive-superseded", action="store_true",
                        help="move the records in RESULTS/SUITE that the suite no longer plans"
                             " (a default or setting changed since they ran) to"
                             " RESULTS/superseded/SUITE, where tables and check do not read them")


def main(args: argparse.Namespace) -> int:
    from heartbench.runs import select
    from heartbench.suite import load_suite

    if args.archive_superseded and args.only:
        raise UserError("--archive-superseded reads the whole suite's plan; drop --only")
    suite = load_suite(args.suite, data_root=args.data_root)
    runs = select(suite.runs, args.only)
    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} {what_is(results_dir)}; expected the"
                        " folder `run --results-dir` wrote into")
    try:  # a done record whose data or weights changed since is "stale" (run redoes it)
        from heartbench.content import with_content

        runs = with_content(suite, runs)
    except (UserError, OSError) as err:
        print(f"note: data or weights not readable here ({err}); records are not checked"
              " against them")
    launches = read_launches(results_dir / suite.name)
    entries = list({e["job"]: (ex, e) for ex, e in launches.values()}.values())
    jobs = job_states(entries)
    if jobs is None:
        print("note: the Slurm controller does not answer; queued jobs show as pending")
        jobs = {}
    states = run_states(results_dir, runs, launches, jobs)
    counts: dict[str, int] = {}
    for run in runs:
        st = states[run.run_id]
        counts[st.state] = counts.get(st.state, 0) + 1
        shown = f"done ({st.reason})" if st.state == "done" and st.reason else st.state
        why = f"  {st.reason}" if st.reason and st.state != "done" else ""
        print(f"{run.run_id}  {run.task:<22} {run.label:<18} {shown}{why}")
    print(f"{suite.name}: {len(runs)} runs: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    if args.archive_superseded:
        from heartbench.results import SUPERSEDED_DIR

        moved = archive_superseded(results_dir, suite.name, {r.run_id for r in suite.runs})
        print(f"{suite.name}: moved {moved} superseded record(s) to"
              f" {results_dir / SUPERSEDED_DIR / suite.name}")
    return 0


def archive_superseded(results_dir: Path, suite_name: str, planned: set[str]) -> int:
    """Move each record of ``suite_name`` whose run id is not in ``planned``, with its
    companions (adapter, checkpoints, markers), under ``superseded/``; nothing is deleted
    and an existing file there is never replaced."""
    from heartbench.results import SUPERSEDED_DIR

    folder, target = results_dir / suite_name, results_dir / SUPERSEDED_DIR / suite_name
    unplanned = sorted(p.stem for p in folder.glob("*.json") if p.stem not in planned)
    moves = [(path, target / path.name) for run_id in unplanned
             for path in sorted(folder.glob(f"{run_id}.*"))]
    clash = next((dest for _, dest in moves if dest.exists()), None)
    if clash is not None:  # checked before anything moves: no run is left half moved
        raise UserError(f"{clash} already exists; not replacing it (move it away first)")
    if moves:
        target.mkdir(parents=True, exist_ok=True)
    for path, dest in moves:
        path.rename(dest)
    return len(unplanned)
