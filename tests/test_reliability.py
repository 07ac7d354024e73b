"""Reliability: preemption, kills, torn checkpoints, concurrent launches, corrupt results.

Every fault here is real: a worker process gets SIGUSR2 or SIGKILL, a checkpoint or record
is truncated on disk, several launches of one suite run at the same time. The end-to-end
tests drive ``python -m heartbench run`` in subprocesses; the cheaper ones call the CLI's
``main`` in this process. Training runs with one thread (OMP_NUM_THREADS=1 in
subprocesses, torch.set_num_threads(1) here): it is faster on a busy 2-core machine, and
the interrupted and uninterrupted runs that are compared must use the same setting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbench.cli import main as cli
from heartbench.results import load_records

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# Fields that differ between two executions of the same run by design.
VOLATILE = ("created", "wall_time_s", "git_commit", "peak_rss_bytes")

# Heart-LoRA, because its resume state is the richest (score accumulators, head mask):
# warm-up 2 -> scores gathered in epoch 2 and the mask applied after it. 24 short epochs
# leave time to interrupt the run after its second checkpoint.
LONG = """
[suite]
name = "{name}"
benchmark = "synth"
data_root = "{data}"
tasks = ["colors"]
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = 24
warmup_epochs = 2
batch_size = 16
lr = 5e-3

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = {{ rank = 8, ne = 5 }}
"""

# Several short runs: for concurrency, divergence and corrupt-record tests.
SHORT = """
[suite]
name = "{name}"
benchmark = "synth"
data_root = "{data}"
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = {epochs}
warmup_epochs = 0
batch_size = 16
lr = 5e-3
max_train_batches = 2

[[methods]]
name = "lora"
label = "LoRA"
config = {{ rank = 4 }}
tasks = {tasks}
"""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root)
    return root


@pytest.fixture(autouse=True)
def sigint_as_in_a_terminal() -> Iterator[None]:
    """A harness that started pytest in the background (`cmd &` in a script, nohup) leaves
    SIGINT ignored, and an ignored signal stays ignored across exec: every `run` these tests
    start would then ignore Ctrl-C and the SIGINT tests fail for the harness's sake. A handler
    (unlike an ignore) is reset to the default at exec, so the children start as from a
    terminal."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process training on one thread (as the subprocesses do), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_suite(folder: Path, text: str, **fields: Any) -> Path:
    path = folder / f"{fields['name']}.toml"
    path.write_text(text.format(**fields))
    return path


def launch(suite: Path, results: Path, executor: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "heartbench", "run", str(suite), "--executor", executor,
         "--results-dir", str(results), *extra],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.results = results  # type: ignore[attr-defined]  # where finish() sees progress
    return proc


# A launch that shows no progress (no file under its results folder changes) for this long
# is hung; one that progresses may take as long as the machine's load makes it.
STALL_S = 600.0


def progress_mark(folder: Path | None) -> tuple[Any, ...]:
    """What changes while a launch makes progress: the files (and their sizes and times)
    under its results folder, checkpoints and job logs included."""
    if folder is None or not folder.exists():
        return ()
    marks = []
    for path in folder.rglob("*"):
        try:
            st = path.stat()
        except OSError:
            continue
        marks.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(marks))


def finish(proc: subprocess.Popen[str], stall: float = STALL_S) -> tuple[int, str, str]:
    """Wait for ``proc`` while it makes progress; fail only when it stalls for ``stall`` s."""
    folder = getattr(proc, "results", None)
    mark, since = progress_mark(folder), time.monotonic()
    while True:
        try:
            out, err = proc.communicate(timeout=5)
            return proc.returncode, out, err
        except subprocess.TimeoutExpired:
            now = progress_mark(folder)
            if now != mark:
                mark, since = now, time.monotonic()
            elif time.monotonic() - since > stall:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"heartbench run made no progress for {stall} s:\n{out}\n{err}")


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (from /proc), children first."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def submitit_worker(proc: subprocess.Popen[str]) -> int | None:
    """The pid of the local executor's worker (``python -m submitit.core._submit``)."""
    for pid in descendants(proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"submitit.core._submit" in cmdline:
            return pid
    return None


def stop_after_two_checkpoints(proc: subprocess.Popen[str], folder: Path, run_id: str,
                               trainer: Callable[[], int | None], timeout: float = 1800) -> int:
    """SIGSTOP the training process once it has checkpointed at least two epochs (so the
    Heart-LoRA mask exists) and both checkpoint files are in place; return its pid. The
    files are the progress followed; ``timeout`` is only a ceiling for a hung machine."""
    ckpt = folder / f"{run_id}.final.ckpt"
    prev = folder / f"{run_id}.final.ckpt.prev"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.communicate()}")
        pid = trainer() if ckpt.exists() and prev.exists() else None
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            while "\nState:\tT" not in Path(f"/proc/{pid}/status").read_text():
                time.sleep(0.001)  # SIGSTOP lands asynchronously
            # Stopped between the two renames of a checkpoint write? Let it go on a little.
            if ckpt.exists() and prev.exists():
                assert not (folder / f"{run_id}.json").exists(), "the run finished too early"
                return pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("no second checkpoint appeared")


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def only_record(results: Path) -> dict[str, Any]:
    records = load_records(results)
    assert records.skipped == [] and len(records.records) == 1, records.skipped
    return records.records[0]


def leftovers(folder: Path) -> list[str]:
    """Anything in a suite folder besides records, adapters and submitit's own logs."""
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix not in (".json", ".safetensors") and p.name != ".submitit")


def job_logs(results: Path) -> str:
    return "".join(p.read_text() for p in sorted(results.rglob(".submitit/*/*_log.err")))


def trainings(text: str) -> list[str]:
    """The run ids of the "training" lines that heartbench.train.execute logs."""
    return re.findall(r"\[heartbench\] run ([0-9a-f]{16}): training", text)


def truncate(path: Path) -> None:
    """Tear a file for real: keep its first half, as a write cut short would."""
    os.truncate(path, path.stat().st_size // 2)


# ---------------------------------------------------------------------------
# Preemption and kills (subprocesses)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, synth_root: Path
              ) -> Iterator[Callable[[], dict[str, Any]]]:
    """The uninterrupted run of LONG (same seed, same CLI). Started at first use, in the
    background, so that it trains while a test interrupts its twin."""
    folder = tmp_path_factory.mktemp("reference")
    suite = write_suite(folder, LONG, name="preempt", data=synth_root)
    proc = launch(suite, folder / "results", "debug")
    cache: dict[str, Any] = {}

    def get() -> dict[str, Any]:
        if not cache:
            rc, out, err = finish(proc)
            assert rc == 0, out + err
            cache.update(only_record(folder / "results"))
        return cache

    yield get
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.slow
def test_sigusr2_preemption_requeues_and_resumes_exactly(
        tmp_path: Path, synth_root: Path, reference: Callable[[], dict[str, Any]]) -> None:
    """SIGUSR2 (Slurm's preemption signal) to the local worker: submitit checkpoints and
    requeues the job, which resumes after its last completed epoch; the record equals the
    uninterrupted run's. (SIGTERM stops a local worker: see the launcher-signal test.)"""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, LONG, name="preempt", data=synth_root)
    run_id = load_suite(suite).runs[0].run_id
    results = tmp_path / "results"
    proc = launch(suite, results, "local")
    folder = results / "preempt"
    worker = stop_after_two_checkpoints(proc, folder, run_id, lambda: submitit_worker(proc))
    os.kill(worker, signal.SIGUSR2)  # delivered when the worker continues
    os.kill(worker, signal.SIGCONT)
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "finished: 1 done, 0 failed" in out
    log = job_logs(results)
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log, log
    resumed = re.findall(rf"resuming from {run_id}\.final\.ckpt(?:\.prev)? after epoch (\d+)", log)
    # Resumed once, after the mask was computed (epoch 2) and before the end (epoch 24).
    assert len(resumed) == 1 and 2 <= int(resumed[0]) < 24, log
    assert trainings(log) == [run_id, run_id]  # the first attempt and the requeued one
    record = only_record(results)
    assert record["heart"]["mask"] is not None and record["heart"]["scores"]["taylor"]
    assert comparable(record) == comparable(reference())
    assert leftovers(folder) == []


@pytest.mark.slow
def test_killed_worker_then_torn_checkpoint_resumes_exactly(
        tmp_path: Path, synth_root: Path, reference: Callable[[], dict[str, Any]]) -> None:
    """kill -9 of the worker: `run` reports the lost run and exits 1; its claim is left by
    the dead holder. The newest checkpoint is then torn; the relaunch takes the claim
    over, falls back to .prev (saying so) and ends with the uninterrupted run's record."""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, LONG, name="preempt", data=synth_root)
    run_id = load_suite(suite).runs[0].run_id
    results = tmp_path / "results"
    folder = results / "preempt"
    proc = launch(suite, results, "local")
    worker = stop_after_two_checkpoints(proc, folder, run_id, lambda: submitit_worker(proc))
    os.kill(worker, signal.SIGKILL)
    rc, out, err = finish(proc)
    assert rc == 1, out + err
    assert "Traceback" not in out + err
    assert re.search(rf"FAILED {run_id} colors Heart-LoRA: job \S+ ended without a result.*"
                     r"rerun the same command", out), out
    claim = json.loads((folder / f"{run_id}.claim").read_text())
    assert claim["pid"] == worker and claim["host"] == socket.gethostname()
    assert not (folder / f"{run_id}.json").exists()

    newest = folder / f"{run_id}.final.ckpt"
    truncate(newest)
    proc = launch(suite, results, "debug")
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "finished: 1 done, 0 failed" in out
    assert f"checkpoint {newest} is unreadable" in err, err
    resumed = re.findall(rf"resuming from {run_id}\.final\.ckpt\.prev after epoch (\d+)", err)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < 24, err
    assert trainings(err) == [run_id]
    assert comparable(only_record(results)) == comparable(reference())
    assert leftovers(folder) == []  # claim taken over and released, checkpoints removed


# ---------------------------------------------------------------------------
# Torn checkpoints (in process: the files are real, the process that reads them too)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("torn, says", [
    ("newest", r"resuming from \w+\.final\.ckpt\.prev after epoch 3"),
    ("both", r"no readable checkpoint: starting from scratch"),
])
def test_torn_checkpoint_falls_back_and_says_so(
        tmp_path: Path, synth_root: Path, one_thread: None, torn: str, says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from heartbench.suite import load_suite
    from heartbench.train import execute, train_phase

    text = LONG.replace("epochs = 24", "epochs = 5")
    spec = load_suite(write_suite(tmp_path, text, name="torn", data=synth_root)).runs[0]
    uninterrupted = execute(spec, tmp_path / "a")
    # A complete training leaves the checkpoints of epochs 3 (.prev) and 4 (newest).
    folder = tmp_path / "b" / "torn"
    folder.mkdir(parents=True)
    train_phase(spec, spec.method_config, "train", "test", folder / f"{spec.run_id}.final.ckpt")
    newest = folder / f"{spec.run_id}.final.ckpt"
    truncate(newest)
    if torn == "both":
        truncate(folder / f"{spec.run_id}.final.ckpt.prev")
    capsys.readouterr()
    record = execute(spec, tmp_path / "b")
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is unreadable" in err
    assert re.search(says, err), err
    assert comparable(record) == comparable(uninterrupted)
    assert leftovers(folder) == []


# ---------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------
HOLDER = """
import os, sys, time
from pathlib import Path
from heartbench.runs import Claim
with Claim(Path(sys.argv[1])) as claim:
    assert claim.held
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_parallel_jobs_and_concurrent_launches_run_every_run_once(
        tmp_path: Path, synth_root: Path) -> None:
    """`run --jobs 3` (local) and a second launch of the same suite (debug) at the same time,
    into one results folder, with one run's claim left by a holder killed with -9: every
    run trains exactly once, and the folder ends with exactly one record per run."""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, SHORT, name="conc", data=synth_root, epochs=6,
                        tasks='["colors", "stripes", "position"]')
    suite.write_text(suite.read_text() + '\n[[methods]]\nname = "heart_lora"\nlabel = "Heart-LoRA"'
                     '\nconfig = { rank = 8, ne = 3 }\ntasks = ["colors"]\n'
                     'train = { warmup_epochs = 1 }\n')
    ids = sorted(r.run_id for r in load_suite(suite).runs)
    assert len(ids) == 4
    results = tmp_path / "results"
    folder = results / "conc"
    folder.mkdir(parents=True)
    stale = folder / f"{ids[0]}.claim"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(stale)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: the claim file stays behind, naming a dead process
    holder.wait()
    assert json.loads(stale.read_text())["pid"] == holder.pid

    first = launch(suite, results, "local", "--jobs", "3")
    second = launch(suite, results, "debug")
    (rc1, out1, err1), (rc2, out2, err2) = finish(first), finish(second)
    assert (rc1, rc2) == (0, 0), out1 + err1 + out2 + err2
    assert "Traceback" not in err1 + err2 + job_logs(results)
    # Every run trained exactly once, across the three jobs of one launch and the other.
    assert sorted(trainings(job_logs(results)) + trainings(err2)) == ids
    records = load_records(results)
    assert records.skipped == []
    assert sorted(r["run_id"] for r in records.records) == ids
    assert all(r["status"] == "done" for r in records.records)
    assert leftovers(folder) == []  # no .tmp, .claim or checkpoint left, the stale claim gone
    assert sorted(p.stem for p in folder.glob("*.safetensors")) == ids


# ---------------------------------------------------------------------------
# Diverging training (in process)
# ---------------------------------------------------------------------------
def test_diverging_run_fails_alone_and_run_exits_nonzero(
        tmp_path: Path, synth_root: Path, one_thread: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path, SHORT, name="diverge", data=synth_root, epochs=3,
                        tasks='["colors", "stripes"]')
    # lr = 1e30 makes the first update blow the weights up: the next loss is NaN or inf.
    suite.write_text(suite.read_text() + '\n[[methods]]\nname = "lora"\nlabel = "LoRA-lr1e30"\n'
                     'config = { rank = 4 }\ntasks = ["colors"]\ntrain = { lr = 1e30 }\n')
    results = tmp_path / "results"
    rc = cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "finished: 2 done, 1 failed, 0 skipped" in out
    failed = re.findall(r"FAILED (\w+) colors LoRA-lr1e30: epoch (\d+): loss is (nan|inf)", out)
    assert len(failed) == 1, out
    run_id, epoch, _ = failed[0]
    records = load_records(results)
    assert records.skipped == []  # a failed record is a valid record
    by_status = {r["status"]: [] for r in records.records}
    for r in records.records:
        by_status[r["status"]].append(r)
    assert len(by_status["done"]) == 2 and len(by_status["failed"]) == 1
    bad = by_status["failed"][0]
    assert bad["run_id"] == run_id and bad["error"]["epoch"] == int(epoch)
    assert re.fullmatch(r"loss is (nan|inf|-inf)", bad["error"]["reason"])
    assert bad["metrics"]["test_acc"] is None
    assert leftovers(results / "diverge") == []


def test_crashing_run_fails_alone_and_keeps_its_place(
        tmp_path: Path, synth_root: Path, one_thread: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An image torn after the pre-flight checks (which only check that files exist) makes
    one run crash while it trains: that run fails with the exception named, the others
    finish, `run` exits 1, and the crashed run leaves no record, so a relaunch retries it."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    # Not the first image of the list: the pre-flight checks decode that one.
    second_image = (data / "stripes" / "train800val200.txt").read_text().split()[2]
    truncate(data / "stripes" / second_image)
    suite = write_suite(tmp_path, SHORT, name="crash", data=data, epochs=2,
                        tasks='["colors", "stripes"]')
    results = tmp_path / "results"
    rc = cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "finished: 1 done, 1 failed, 0 skipped" in out
    # The failure names the image and the exception that reading it raised.
    assert re.search(rf"FAILED \w+ stripes LoRA: image \S*{re.escape(second_image)} cannot be"
                     r" decoded \(\w+(Error|Exception)\b.*\)", out), out
    records = load_records(results)
    assert records.skipped == [] and [r["task"] for r in records.records] == ["colors"]
    assert [p.suffix for p in (results / "crash").glob("*.claim")] == []


# ---------------------------------------------------------------------------
# Corrupt and foreign files in results/ (in process)
# ---------------------------------------------------------------------------
def test_truncated_and_foreign_files_are_reported_skipped_and_rerun(
        tmp_path: Path, synth_root: Path, one_thread: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path, SHORT, name="corrupt", data=synth_root, epochs=2,
                        tasks='["colors", "stripes", "position"]')
    results = tmp_path / "results"
    args = ["run", str(suite), "--executor", "debug", "--results-dir", str(results)]
    assert cli(args) == 0
    folder = results / "corrupt"
    paths = sorted(folder.glob("*.json"))
    assert len(paths) == 3
    original = {p.stem: comparable(json.loads(p.read_text())) for p in paths}
    torn, foreign, intact = paths
    truncate(torn)
    foreign.write_text("[1, 2, 3]\n")  # valid JSON, but not a record
    strangers = {folder / "notes.txt": "hello\n",
                 folder / f".{intact.stem}.abc123.tmp": '{"schema": 1',
                 results / "other" / "broken.json": '{"run_id": "x", ',
                 results / "other" / "data.bin": "\x00\x01"}
    for path, text in strangers.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    untouched = [intact, *strangers]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in untouched}

    loaded = load_records(results)
    assert [r["run_id"] for r in loaded.records] == [intact.stem]
    reasons = {p: why for p, why in loaded.skipped}
    assert set(reasons) == {torn, foreign, *strangers}
    assert "truncated JSON" in reasons[torn] and "not a JSON object" in reasons[foreign]
    assert "truncated JSON" in reasons[results / "other" / "broken.json"]
    assert "unknown file" in reasons[folder / "notes.txt"]
    assert "unfinished write" in reasons[folder / f".{intact.stem}.abc123.tmp"]

    capsys.readouterr()
    assert cli(args) == 0
    out, err = capsys.readouterr()
    assert "3 runs, 1 already done, 2 to run" in out
    for path in (torn, foreign):  # named, and said to be replaced
        assert re.search(rf"{re.escape(str(path))}: not a usable record .*rerunning", out), out
    assert sorted(trainings(err)) == sorted([torn.stem, foreign.stem])
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in untouched} == before
    loaded = load_records(results)
    assert {r["run_id"]: comparable(r) for r in loaded.records} == original
    assert {p for p, _ in loaded.skipped} == set(strangers)


# ---------------------------------------------------------------------------
# Signals to the launcher (subprocesses)
# ---------------------------------------------------------------------------
def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits for the (stopped) process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    bit = 1 << (signum - 1)
    return any(int(line.split()[1], 16) & bit for line in status.splitlines()
               if line.startswith(("SigPnd:", "ShdPnd:")))


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_launcher_stops_workers_at_a_safe_point_and_rerun_resumes(
        tmp_path: Path, synth_root: Path, reference: Callable[[], dict[str, Any]],
        signum: int, code: int) -> None:
    """SIGTERM or SIGINT to `run` alone: it passes the stop on to its local worker, which is
    frozen in mid-training here; the worker stops at a safe point (its claim released, its
    last checkpoint whole, no record, no process left), `run` says so and exits 128 + signal;
    the rerun resumes from the checkpoint and ends with the uninterrupted run's record."""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, LONG, name="preempt", data=synth_root)
    run_id = load_suite(suite).runs[0].run_id
    results = tmp_path / "results"
    folder = results / "preempt"
    proc = launch(suite, results, "local")
    worker = stop_after_two_checkpoints(proc, folder, run_id, lambda: submitit_worker(proc))
    os.kill(proc.pid, signum)
    deadline = time.monotonic() + STALL_S  # the stop travels launcher -> controller -> worker
    while not signal_pending(worker, signal.SIGTERM):
        assert time.monotonic() < deadline, "the stop never reached the worker"
        time.sleep(0.05)
    os.kill(worker, signal.SIGCONT)
    rc, out, err = finish(proc)
    assert rc == code, out + err
    assert "interrupted: 1 local worker(s) stopped at a safe point, 0/1 runs done" in err, err
    assert "Traceback" not in out + err
    log = job_logs(results)
    assert "caught SIGTERM: stopping at a safe point" in log, log
    assert "stopped: 1 run(s) of this job left to a rerun" in log and "Traceback" not in log
    assert not Path(f"/proc/{worker}").exists()
    assert not (folder / f"{run_id}.claim").exists() and not (folder / f"{run_id}.json").exists()
    assert not list(folder.glob("*.tmp"))

    proc = launch(suite, results, "debug")
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    resumed = re.findall(rf"resuming from {run_id}\.final\.ckpt after epoch (\d+)", err)
    assert len(resumed) == 1 and 2 <= int(resumed[0]) < 24, err
    assert comparable(only_record(results)) == comparable(reference())
    assert leftovers(folder) == []


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_prints_no_traceback(tmp_path: Path, synth_root: Path
                                                         ) -> None:
    """Ctrl-C in a terminal signals the whole process group (launcher, submitit's controller,
    worker): `run` says "interrupted" and exits 130 with no traceback anywhere, and the
    worker stopped at a safe point. submitit's controller once died of the SIGINT with a
    KeyboardInterrupt traceback."""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, LONG, name="ctrlc", data=synth_root)
    run_id = load_suite(suite).runs[0].run_id
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "heartbench", "run", str(suite), "--executor", "local",
         "--results-dir", str(results)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)  # its own group, as a shell's job
    proc.results = results  # type: ignore[attr-defined]
    worker = stop_after_two_checkpoints(proc, results / "ctrlc", run_id,
                                        lambda: submitit_worker(proc))
    os.killpg(proc.pid, signal.SIGINT)
    os.kill(worker, signal.SIGCONT)
    rc, out, err = finish(proc)
    assert rc == 130, out + err
    assert "interrupted:" in err and "Traceback" not in out + err, err
    log = job_logs(results)
    assert "stopping at a safe point" in log and "Traceback" not in log, log
    assert not (results / "ctrlc" / f"{run_id}.claim").exists()


# ---------------------------------------------------------------------------
# Claims are taken atomically
# ---------------------------------------------------------------------------
def test_a_claim_being_written_is_never_taken_for_a_dead_one(tmp_path: Path) -> None:
    """An empty claim file (what a writer shows between create and write with a plain
    open/write) is left alone while it is fresh; only a long-unreadable one is taken over."""
    from heartbench.runs import TORN_CLAIM_AGE_S, Claim

    path = tmp_path / "run.claim"
    path.write_text("")
    with Claim(path) as claim:
        assert not claim.held
    assert path.read_text() == ""
    old = time.time() - TORN_CLAIM_AGE_S - 5
    os.utime(path, (old, old))
    with Claim(path) as claim:
        assert claim.held and json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


# The racing processes below start together on a signal file (each says it is ready, then
# waits for "go"), and hold or read until told: no step depends on a wall-clock window, so a
# loaded machine only makes the test slower.
GATE = """
import sys, time
from pathlib import Path
def wait_for(path, ceiling=600.0):
    deadline = time.monotonic() + ceiling
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.001)
def start_together(signals, name):
    (signals / f"ready-{name}").touch()
    wait_for(signals / "go")
"""

CONTENDER = GATE + """
import json, os
from heartbench.runs import Claim
path, inside, signals, rounds = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
start_together(signals, os.getpid())
held = 0
for _ in range(rounds):
    with Claim(path) as claim:
        if claim.held:
            held += 1
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # two holders: error
            os.close(fd)
            assert json.loads(path.read_text())["pid"] == os.getpid()
            time.sleep(0.002)
            os.unlink(inside)
print(held, flush=True)
"""

READER = GATE + """
import json, os
path, signals = Path(sys.argv[1]), Path(sys.argv[2])
start_together(signals, os.getpid())
seen = 0
while not (signals / "stop").exists():  # until every contender has finished
    try:
        text = path.read_text()
    except FileNotFoundError:
        continue
    json.loads(text)  # a claim is complete whenever it is visible
    seen += 1
print(seen, flush=True)
"""


def _go_when_ready(signals: Path, count: int) -> None:
    """Let ``count`` processes start together once each has said it is ready."""
    deadline = time.monotonic() + STALL_S
    while len(list(signals.glob("ready-*"))) < count:
        assert time.monotonic() < deadline, "racing processes did not start"
        time.sleep(0.05)
    (signals / "go").touch()


def test_concurrent_claims_exclude_each_other_and_are_never_seen_partial(tmp_path: Path) -> None:
    """Four processes claim, hold and release one run's claim in a tight loop while a fifth
    reads the claim file: never two holders at once, never an empty or partial claim seen;
    then four processes race to take over one dead holder's claim: exactly one wins."""
    work, signals = tmp_path / "work", tmp_path / "signals"
    work.mkdir()
    signals.mkdir()
    path, inside = work / "run.claim", work / "inside"

    def spawn(script: str, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", script, *argv], cwd=REPO, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    contenders = [spawn(CONTENDER, str(path), str(inside), str(signals), "150") for _ in range(4)]
    reader = spawn(READER, str(path), str(signals))
    _go_when_ready(signals, 5)
    results = [finish(p) for p in contenders]
    (signals / "stop").touch()
    results.append(finish(reader))
    for rc, out, err in results:
        assert rc == 0, out + err
    assert sum(int(out) for _, out, _ in results[:4]) > 0  # the claim changed hands
    assert int(results[4][1]) > 0  # and was read while held
    assert not path.exists() and not inside.exists()
    assert [p.name for p in work.iterdir()] == []  # no temporary file left

    # A dead holder's claim: four launches race to take it over; one gets it.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    race = tmp_path / "race"
    race.mkdir()
    racers = [spawn(TAKEOVER, str(path), str(race)) for _ in range(4)]
    _go_when_ready(race, 4)
    outs = [finish(p) for p in racers]
    assert all(rc == 0 for rc, _, _ in outs), outs
    assert sorted(out.strip() for _, out, _ in outs) == ["held", "not", "not", "not"]


TAKEOVER = GATE + """
import os
from heartbench.runs import Claim
path, signals = Path(sys.argv[1]), Path(sys.argv[2])
start_together(signals, os.getpid())
with Claim(path) as claim:
    print("held" if claim.held else "not", flush=True)
    (signals / f"tried-{os.getpid()}").touch()
    if claim.held:  # hold it until every racer has tried
        deadline = time.monotonic() + 600
        while len(list(signals.glob("tried-*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
"""
