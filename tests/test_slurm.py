"""heartbench against a real Slurm cluster (``scripts/slurm-cluster.sh up``: one node).

Marked ``slurm``. Without a cluster these tests skip, except in CI (``CI`` or
``HEARTBENCH_REQUIRE_SLURM`` set), where a missing cluster fails them: .ci/run starts one.

Every interruption here is Slurm's own: ``scontrol requeue``, ``scancel --signal=USR2``, a
time limit reached (a real ``timeout_min = 3``: Slurm itself sends the preemption signal
90 s before it), ``scancel``. To interrupt a run in
the middle, its worker is frozen (SIGSTOP) once it has written two epoch checkpoints and
thawed once Slurm's signal is pending. The reference is the same run uninterrupted, on Slurm.
A requeued job waits ~30 s (``BeginTime``) before it may start again; the tests release it at
once (``scontrol update StartTime=now``) to keep the suite short.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
VOLATILE = ("created", "wall_time_s", "git_commit", "peak_rss_bytes")
REQUIRED = any(os.environ.get(k, "").lower() not in ("", "0", "false", "no")
               for k in ("CI", "HEARTBENCH_REQUIRE_SLURM"))
# Ceilings for waits that follow progress: generous, only a hung cluster reaches them.
CEILING_S = 600.0

pytestmark = pytest.mark.slurm

# Heart-LoRA: the richest resume state. Each epoch writes a checkpoint; the run is frozen
# after its second one, so 8 epochs leave the interruption in the middle.
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
epochs = 8
warmup_epochs = 2
batch_size = 16
lr = 5e-3

[launcher]
executor = "slurm"
cpus_per_task = 1
timeout_min = 20
{extra}

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = {{ rank = 8, ne = 5 }}
"""


# ---------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> str:
    """The node's name; skip (fail in CI) without a working cluster."""
    from heartbench import slurm

    problem = None if shutil.which("sbatch") else "sbatch is not on PATH"
    problem = problem or slurm.controller_error()
    if problem is None:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                timeout=30).stdout.split()
        if not any(s.startswith(("idle", "mixed", "alloc")) for s in states):
            problem = f"no usable node (states: {states})"
    if problem is not None:
        message = f"no Slurm cluster ({problem}); start one with scripts/slurm-cluster.sh up"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root)
    return root


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def write_suite(folder: Path, name: str, data: Path, extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(LONG.format(name=name, data=data, extra=extra))
    return path


def heartbench(*args: str, env: dict[str, str] | None = None, **kw: Any
               ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "heartbench", *args], cwd=REPO,
                            env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def finish(proc: subprocess.Popen[str], ceiling: float = CEILING_S) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=ceiling)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"heartbench did not finish within {ceiling} s:\n{out}\n{err}")
    return proc.returncode, out, err


def wait_for(what: str, check: Callable[[], Any], ceiling: float = CEILING_S) -> Any:
    deadline = time.monotonic() + ceiling
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what} after {ceiling} s")


def worker_pid(results: Path) -> int | None:
    """The pid of the submitit worker of a job whose folder is under ``results``."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue
        argv = text.split(b"\0")
        # The Python process itself, not the srun that started it (same arguments after it).
        if (b"python" in Path(argv[0].decode(errors="replace")).name.encode()
                and b"submitit.core._submit" in argv and str(results).encode() in text):
            return int(cmdline.parent.name)
    return None


def freeze_after_two_checkpoints(results: Path, suite: str, run_id: str) -> int:
    folder = results / suite
    ckpt, prev = folder / f"{run_id}.final.ckpt", folder / f"{run_id}.final.ckpt.prev"

    def stopped() -> int | None:
        pid = worker_pid(results) if ckpt.exists() and prev.exists() else None
        if pid is None:
            return None
        os.kill(pid, signal.SIGSTOP)
        wait_for("the worker to stop", lambda: is_stopped(pid))  # SIGSTOP lands asynchronously
        if ckpt.exists() and prev.exists():  # not between the two renames of a write
            assert not (folder / f"{run_id}.json").exists(), "the run finished too early"
            return pid
        os.kill(pid, signal.SIGCONT)
        return None

    return wait_for("a second checkpoint", stopped)


def is_stopped(pid: int) -> bool:
    try:
        return "\nState:\tT" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True  # gone: nothing left to stop


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits for the (stopped) process ``pid``, or has reached it already
    (Slurm may continue a stopped step with the signal: the process then acts and ends)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    if "\nState:\tT" not in status:
        return True
    bit = 1 << (signum - 1)
    return any(int(line.split()[1], 16) & bit for line in status.splitlines()
               if line.startswith(("SigPnd:", "ShdPnd:")))


def thaw(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:  # it has ended already
        pass


@pytest.fixture(autouse=True)
def cancel_leftover_jobs(tmp_path: Path) -> Iterator[None]:
    """A failed test must not leave its jobs to occupy the node for the next ones."""
    yield
    for launch in tmp_path.rglob(".submitit/launches/*.json"):
        jobs = {j["job"].split("_")[0] for j in json.loads(launch.read_text())["jobs"]}
        subprocess.run(["scancel", *jobs], capture_output=True)


def job_id_of(results: Path) -> str:
    (launch,) = (results).rglob(".submitit/launches/*.json")
    (job,) = json.loads(launch.read_text())["jobs"]
    return job["job"]


def squeue(job: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T|%r"],
                         capture_output=True, text=True).stdout.strip()
    return tuple(out.split("|")) if out else ("", "")  # type: ignore[return-value]


def release_when_requeued(job: str, also: tuple[str, ...] = ()) -> None:
    """Once the job is pending again after its requeue, let it start now (and apply
    ``also``, e.g. the original time limit back)."""
    wait_for(f"job {job} requeued", lambda: squeue(job)[0] == "PENDING")
    time.sleep(7.0)  # a floor, not a ceiling: `run` (polling every 3 s) sees it pending
    subprocess.run(["scontrol", "update", f"JobId={job}", *also, "StartTime=now"], check=True)


def job_logs(results: Path) -> str:
    return "".join(p.read_text() for p in sorted(results.rglob(".submitit/*/*_log.err")))


def trainings(text: str) -> list[str]:
    return re.findall(r"\[heartbench\] run ([0-9a-f]{16}): training", text)


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def only_record(results: Path, suite: str) -> dict[str, Any]:
    (path,) = (results / suite).glob("*.json")
    return json.loads(path.read_text())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix not in (".json", ".safetensors") and p.name != ".submitit")


@pytest.fixture(scope="module")
def reference(cluster: str, tmp_path_factory: pytest.TempPathFactory, synth_root: Path
              ) -> Iterator[Callable[[], dict[str, Any]]]:
    """The uninterrupted LONG run on Slurm, submitted at first use, awaited when needed."""
    folder = tmp_path_factory.mktemp("reference")
    suite = write_suite(folder, "interrupt", synth_root)
    proc = heartbench("run", str(suite), "--results-dir", str(folder / "results"))
    cache: dict[str, Any] = {}

    def get() -> dict[str, Any]:
        if not cache:
            rc, out, err = finish(proc)
            assert rc == 0, out + err
            cache.update(only_record(folder / "results", "interrupt"))
        return cache

    yield get
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


# ---------------------------------------------------------------------------
# A smoke subset as one job array, equal to the local executor's records
# ---------------------------------------------------------------------------
def test_smoke_subset_as_one_array_equals_local(cluster: str, tmp_path: Path,
                                                synth_root: Path) -> None:
    """Four smoke runs (shortened) in one array of two 1-CPU tasks (two runs each: the
    start-up is paid once per task); submitted with --no-wait, followed with `status`; every record equals
    the local executor's (two 1-thread workers), field for field. ``runs_per_task`` and
    ``threads`` are pinned: their defaults follow the node's and this machine's core count."""
    text = (REPO / "suites" / "smoke.toml").read_text()
    text = text.replace('tasks = ["all"]', 'tasks = ["colors", "stripes"]\nname = "smokesub"')
    text = text.replace("epochs = 6", "epochs = 3\nmax_train_batches = 8").replace(
        'timeout_min = 30', 'timeout_min = 30\ncpus_per_task = 1\nruns_per_task = 2\nthreads = 1')
    suite = tmp_path / "smokesub.toml"
    suite.write_text(text)
    only = ["--only", "LoRA", "--only", "Linear", "--data-root", str(synth_root)]
    local = heartbench("run", str(suite), "--executor", "local", "--jobs", "2",
                       "--results-dir", str(tmp_path / "local"), *only)
    results = tmp_path / "slurm"
    rc, out, err = finish(heartbench("run", str(suite), "--executor", "slurm", "--no-wait",
                                     "--results-dir", str(results), *only))
    assert rc == 0, out + err
    assert "2 array task(s) of up to 2 runs (launcher.runs_per_task), each 1 CPUs" in out, out
    assert re.search(r"submitted 2 job\(s\) with the slurm executor: (\d+)_0, \1_1", out), out
    folder = results / "smokesub"
    wait_for("four records", lambda: len(list(folder.glob("*.json"))) == 4)
    (launch,) = folder.rglob("launches/*.json")
    jobs = [job["job"] for job in json.loads(launch.read_text())["jobs"]]
    wait_for("both tasks to end", lambda: all(
        (folder / ".submitit" / j / f"{j}_0_result.pkl").exists() for j in jobs))
    rc, out, err = finish(heartbench("status", str(suite), "--results-dir", str(results), *only))
    assert rc == 0, out + err
    assert len(re.findall(r"(?m)^[0-9a-f]{16} .* done$", out)) == 4 and "smokesub: 4 runs: 4 done" in out, out
    logs = [p.read_text() for p in sorted(folder.rglob(".submitit/*/*_log.err"))]
    assert [len(trainings(log)) for log in logs] == [2, 2]
    rc, out, err = finish(local)
    assert rc == 0, out + err
    slurm_records = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    local_records = {p.name: json.loads(p.read_text())
                     for p in (tmp_path / "local" / "smokesub").glob("*.json")}
    assert set(slurm_records) == set(local_records) and len(local_records) == 4
    for name, record in slurm_records.items():
        assert record["threads"] == 1
        assert comparable(record) == comparable(local_records[name]), name
    assert leftovers(folder) == []


# ---------------------------------------------------------------------------
# Interruptions: each ends in the uninterrupted run's record
# ---------------------------------------------------------------------------
def interrupt_and_finish(tmp_path: Path, synth_root: Path, interrupt: Callable[[str, int], None],
                         extra: str = "", once: bool = True) -> tuple[str, str, Path]:
    """``once``: exactly one resume (a short time limit may requeue a slow restart again)."""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, "interrupt", synth_root)
    if extra:  # a launcher key of LONG set otherwise
        key = extra.split("=")[0].strip()
        suite.write_text(re.sub(rf"(?m)^{key} = .*\n", "", suite.read_text(), count=1))
        suite.write_text(suite.read_text().replace("[launcher]", f"[launcher]\n{extra}"))
    run_id = load_suite(suite).runs[0].run_id
    results = tmp_path / "results"
    proc = heartbench("run", str(suite), "--results-dir", str(results))
    pid = freeze_after_two_checkpoints(results, "interrupt", run_id)
    interrupt(job_id_of(results), pid)
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "finished: 1 done, 0 failed" in out, out
    assert re.search(rf"\[0/1\] requeued {run_id} colors Heart-LoRA", out), out
    log = job_logs(results)
    resumed = re.findall(rf"resuming from {run_id}\.final\.ckpt(?:\.prev)? after epoch (\d+)", log)
    assert (len(resumed) == 1 or not once) and 2 <= int(resumed[0]) < 8, log
    assert trainings(log) == [run_id] * (len(resumed) + 1), log
    assert leftovers(results / "interrupt") == []
    return log, out, results


def test_scontrol_requeue_resumes_exactly(cluster: str, tmp_path: Path, synth_root: Path,
                                          reference: Callable[[], dict[str, Any]]) -> None:
    def requeue(job: str, pid: int) -> None:
        subprocess.run(["scontrol", "requeue", job], check=True)
        thaw(pid)  # Slurm's SIGTERM: the worker stops at a safe point
        release_when_requeued(job)

    log, _, results = interrupt_and_finish(tmp_path, synth_root, requeue)
    assert "caught SIGTERM: stopping at a safe point" in log, log
    assert comparable(only_record(results, "interrupt")) == comparable(reference())


def test_requeued_task_of_two_runs_resumes_the_first_and_trains_the_second(
        cluster: str, tmp_path: Path, synth_root: Path,
        reference: Callable[[], dict[str, Any]]) -> None:
    """One array task holding two runs (two seeds, runs_per_task = 2), requeued in the middle
    of its first run: the requeued task resumes that run from its checkpoint (its record is
    the uninterrupted run's), then trains the second, which had not started."""
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, "interrupt", synth_root, extra="runs_per_task = 2")
    suite.write_text(suite.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    first, second = (r.run_id for r in load_suite(suite).runs)
    results = tmp_path / "results"
    proc = heartbench("run", str(suite), "--results-dir", str(results))
    pid = freeze_after_two_checkpoints(results, "interrupt", first)
    job = job_id_of(results)
    assert not (results / "interrupt" / f"{second}.final.ckpt").exists()
    subprocess.run(["scontrol", "requeue", job], check=True)
    thaw(pid)
    release_when_requeued(job)
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "1 array task(s) of up to 2 runs" in out and "finished: 2 done, 0 failed" in out, out
    log = job_logs(results)
    resumed = re.findall(rf"resuming from {first}\.final\.ckpt(?:\.prev)? after epoch (\d+)", log)
    assert len(resumed) == 1 and 2 <= int(resumed[0]) < 8, log
    assert trainings(log) == [first, first, second], log
    records = {p.stem: json.loads(p.read_text()) for p in (results / "interrupt").glob("*.json")}
    assert set(records) == {first, second} and records[second]["status"] == "done"
    assert comparable(records[first]) == comparable(reference())
    assert leftovers(results / "interrupt") == []


def test_preemption_signal_requeues_and_resumes_exactly(
        cluster: str, tmp_path: Path, synth_root: Path,
        reference: Callable[[], dict[str, Any]]) -> None:
    def preempt(job: str, pid: int) -> None:
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        wait_for("SIGUSR2 to reach the worker", lambda: signal_pending(pid, signal.SIGUSR2))
        thaw(pid)
        release_when_requeued(job)

    log, _, results = interrupt_and_finish(tmp_path, synth_root, preempt)
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log, log
    assert comparable(only_record(results, "interrupt")) == comparable(reference())


def test_time_limit_requeues_and_resumes_exactly(
        cluster: str, tmp_path: Path, synth_root: Path,
        reference: Callable[[], dict[str, Any]]) -> None:
    """A real time limit (timeout_min = 3, the least `run` accepts): Slurm sends USR2 90 s
    before it; submitit, judging the job timed out, checkpoints and requeues it."""
    def time_limit(job: str, pid: int) -> None:
        wait_for("the time limit's SIGUSR2", lambda: signal_pending(pid, signal.SIGUSR2))
        thaw(pid)
        release_when_requeued(job)

    log, _, results = interrupt_and_finish(tmp_path, synth_root, time_limit,
                                           extra="timeout_min = 3", once=False)
    assert "this job is timed-out" in log, log
    assert "Traceback" not in log, log  # scontrol's own SIGTERM is no crash of the run
    assert comparable(only_record(results, "interrupt")) == comparable(reference())


def test_scancel_then_rerun_resumes_exactly(cluster: str, tmp_path: Path, synth_root: Path,
                                            reference: Callable[[], dict[str, Any]]) -> None:
    from heartbench.suite import load_suite

    suite = write_suite(tmp_path, "interrupt", synth_root)
    run_id = load_suite(suite).runs[0].run_id
    results = tmp_path / "results"
    proc = heartbench("run", str(suite), "--results-dir", str(results))
    pid = freeze_after_two_checkpoints(results, "interrupt", run_id)
    job = job_id_of(results)
    subprocess.run(["scancel", job], check=True)
    thaw(pid)
    rc, out, err = finish(proc)
    assert rc == 1, out + err
    assert "finished: 0 done, 1 failed" in out, out
    assert re.search(rf"FAILED {run_id} colors Heart-LoRA: job {job} was cancelled", out), out
    rc, out, err = finish(heartbench("status", str(suite), "--results-dir", str(results)))
    assert re.search(rf"{run_id} .* cancelled  job {job} was cancelled", out), out
    rc, out, err = finish(heartbench("run", str(suite), "--results-dir", str(results)))
    assert rc == 0, out + err
    assert "finished: 1 done, 0 failed" in out, out
    resumed = re.findall(r"resuming from \w+\.final\.ckpt(?:\.prev)? after epoch (\d+)",
                         job_logs(results))
    assert len(resumed) == 1 and 2 <= int(resumed[0]) < 8
    assert comparable(only_record(results, "interrupt")) == comparable(reference())
    assert leftovers(results / "interrupt") == []


def test_failed_run_is_reported_and_kept_apart_on_slurm(cluster: str, tmp_path: Path,
                                                       synth_root: Path) -> None:
    """One array task of two runs, the first diverging (lr = 1e30): the task goes on to the
    second, `run` waits and reports the failure with its reason and exit 1, `status` shows
    it failed with that reason, and a rerun trains only the failed run again."""
    text = LONG.format(name="diverge", data=synth_root, extra="runs_per_task = 2")
    text = text.replace("epochs = 8", "epochs = 2\nmax_train_batches = 4").replace(
        "warmup_epochs = 2", "warmup_epochs = 1")
    # No warm-up for the diverging run: under the reference loops' per-epoch stepping both of
    # its epochs would otherwise run at warmup_lr_init and never reach lr = 1e30.
    text += ('\n[[methods]]\nname = "lora"\nlabel = "LoRA-lr1e30"\nconfig = { rank = 4 }\n'
             'train = { lr = 1e30, warmup_epochs = 0 }\n')
    suite = tmp_path / "diverge.toml"
    suite.write_text(text)
    results = tmp_path / "results"
    rc, out, err = finish(heartbench("run", str(suite), "--results-dir", str(results)))
    assert rc == 1, out + err
    assert "1 array task(s) of up to 2 runs" in out, out
    assert "finished: 1 done, 1 failed" in out, out
    (bad,) = re.findall(r"FAILED (\w+) colors LoRA-lr1e30: epoch \d+: loss is (?:nan|inf)", out)
    rc, out, err = finish(heartbench("status", str(suite), "--results-dir", str(results)))
    assert re.search(rf"(?m)^{bad} .* failed +epoch \d+: loss is (nan|inf)", out), out
    (counts,) = re.findall(r"(?m)^diverge: 2 runs: (.*)$", out)
    assert sorted(counts.split(", ")) == ["1 done", "1 failed"], out
    rc, out, err = finish(heartbench("run", str(suite), "--results-dir", str(results)))
    assert rc == 1 and "2 runs, 1 already done, 1 to run" in out, out + err
    assert leftovers(results / "diverge") == []


# ---------------------------------------------------------------------------
# Mistakes: one line, exit code 2, nothing left behind
# ---------------------------------------------------------------------------
def one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """In this process (the refusals come before any job): exit code 2 and one line."""
    from heartbench.cli import main as cli

    capsys.readouterr()
    rc = cli(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, out + err
    return lines[0]


@pytest.mark.parametrize("extra, key", [
    ('slurm_extra = { constraint = "no-such-feature" }', "Invalid feature"),  # sbatch's own
    ('partition = "no-such-partition"', "launcher.partition"),
    ("cpus_per_task = 4096", "launcher.cpus_per_task"),
    ("gpus_per_node = 1", "launcher.gpus_per_node"),
    ("mem_gb = 100000", "launcher.mem_gb"),
    ("timeout_min = 2", "launcher.timeout_min"),
])
def test_impossible_request_is_one_line_and_leaves_nothing(
        cluster: str, tmp_path: Path, synth_root: Path, extra: str, key: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    text = LONG.format(name="bad", data=synth_root, extra="").replace("cpus_per_task = 1\n", "")
    text = text.replace("timeout_min = 20\n", "").replace("[launcher]", f"[launcher]\n{extra}")
    suite = tmp_path / "bad.toml"
    suite.write_text(text)
    results = tmp_path / "results"
    line = one_line_exit_2(["run", str(suite), "--results-dir", str(results)], capsys)
    assert key in line, line
    assert not results.exists(), sorted(results.rglob("*"))


def test_jobs_option_is_refused_on_slurm(cluster: str, tmp_path: Path, synth_root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path, "jobs", synth_root)
    line = one_line_exit_2(["run", str(suite), "--jobs", "2", "--results-dir",
                            str(tmp_path / "results")], capsys)
    assert "--jobs" in line and "launcher.runs_per_task" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("executor", ["slurm", "auto"])
def test_unreachable_controller_is_one_line(cluster: str, tmp_path: Path, synth_root: Path,
                                            executor: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch is there but no controller answers (a copy of the configuration that points
    at a port nobody listens on, so the real cluster stays up for the other tests)."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"(?m)^SlurmctldPort=.*\n", "", conf) + "SlurmctldPort=1\n")
    suite = write_suite(tmp_path, "down", synth_root)
    results = tmp_path / "results"
    monkeypatch.setenv("SLURM_CONF", str(dead))  # for sinfo and sbatch, run from here
    line = one_line_exit_2(["run", str(suite), "--executor", executor, "--results-dir",
                            str(results)], capsys)
    assert "no Slurm controller answers" in line and "--executor local" in line, line
    assert not results.exists()


# ---------------------------------------------------------------------------
# A packed task (launcher.pack): requeued mid-run, each run ends in its own record
# ---------------------------------------------------------------------------
def shared_weights(path: Path) -> Path:
    """Frozen weights both seeds share (a randomly initialised backbone differs per seed,
    and runs on different frozen tensors do not pack)."""
    import torch
    from safetensors.torch import save_file

    from heartbench.backbones import build_backbone

    torch.manual_seed(123)
    save_file({k: v.contiguous() for k, v in build_backbone("vit_test", 4).model.state_dict()
               .items()}, str(path))
    return path


def packed_suite(folder: Path, data: Path, weights: Path) -> Path:
    """LONG with two seeds trained as one packed model in one array task."""
    path = write_suite(folder, "packed", data, extra="pack = 2\nruns_per_task = 2")
    path.write_text(path.read_text().replace("seeds = [0]", "seeds = [0, 1]").replace(
        'name = "vit_test"', f'name = "vit_test"\nweights = "{weights}"'))
    return path


def packed_records(results: Path) -> dict[str, dict[str, Any]]:
    """Each record less what differs between executions (the pack's own wall time too)."""
    out = {}
    for path in sorted((results / "packed").glob("*.json")):
        record = comparable(json.loads(path.read_text()))
        record["packed"] = {k: v for k, v in record["packed"].items() if k != "wall_time_s"}
        out[path.stem] = record
    return out


def test_packed_task_requeued_resumes_to_each_runs_uninterrupted_record(
        cluster: str, tmp_path: Path, synth_root: Path) -> None:
    from heartbench.suite import load_suite

    weights = shared_weights(tmp_path / "vit_test.safetensors")
    (tmp_path / "whole").mkdir()
    whole_suite = packed_suite(tmp_path / "whole", synth_root, weights)
    suite = packed_suite(tmp_path, synth_root, weights)
    run_ids = [r.run_id for r in load_suite(suite).runs]
    assert len(run_ids) == 2
    whole = heartbench("run", str(whole_suite), "--results-dir", str(tmp_path / "whole" / "r"))
    results = tmp_path / "results"
    proc = heartbench("run", str(suite), "--results-dir", str(results))
    # The pack writes its runs' checkpoints one after the other: freeze once the second
    # run has two (then the first has them too), in the middle of the 8 epochs.
    pid = freeze_after_two_checkpoints(results, "packed", run_ids[1])
    job = job_id_of(results)
    subprocess.run(["scontrol", "requeue", job], check=True)
    thaw(pid)  # Slurm's SIGTERM: the worker stops at a safe point
    release_when_requeued(job)
    for p in (proc, whole):
        rc, out, err = finish(p)
        assert rc == 0 and "finished: 2 done, 0 failed" in out, out + err
    log = job_logs(results)
    assert f"pack of 2: {', '.join(run_ids)}" in log and "not packing" not in log, log
    assert "caught SIGTERM: stopping at a safe point" in log, log
    resumed = re.findall(r"resuming from ([0-9a-f]{16})\.final\.ckpt(?:\.prev)? after epoch (\d)",
                         log)
    # Both runs resume mid-run (the pack at their common epoch, heartbench/pack.py).
    assert {r for r, _ in resumed} == set(run_ids), log
    assert all(2 <= int(e) < 8 for _, e in resumed), log
    got, want = packed_records(results), packed_records(tmp_path / "whole" / "r")
    assert set(got) == set(run_ids) and all(r["packed"] for r in got.values())
    for run_id in run_ids:
        differ = [k for k in want[run_id] if got[run_id].get(k) != want[run_id][k]]
        assert differ == [], (run_id, differ)
    assert leftovers(results / "packed") == []
