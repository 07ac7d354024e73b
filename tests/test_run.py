"""`heartbench run`: a real suite end to end, resume by skipping, Slurm sbatch generation."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heartbench.cli import main as cli
from heartbench.results import load_records

REPO = Path(__file__).resolve().parent.parent

SUITE = """
[suite]
name = "mini"
benchmark = "synth"
data_root = "{data}"
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = 3
warmup_epochs = 1
batch_size = 16
lr = 5e-3

[launcher]
jobs = 2
partition = "gpu-long"
gpus_per_node = 2
cpus_per_task = 6
timeout_min = 90
array_parallelism = 3
runs_per_task = 1

[[methods]]
name = "lora"
label = "LoRA"
config = {{ rank = 4 }}
tasks = ["colors", "position"]

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = {{ rank = 8, ne = 5 }}
tasks = ["colors"]
"""


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root)
    return root


def suite_file(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / "mini.toml"
    path.write_text(SUITE.format(data=data))
    return path


def test_local_run_writes_records_then_skips(tmp_path: Path, synth_root: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    suite = suite_file(tmp_path, synth_root)
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "local", "--results-dir", str(results)]) == 0
    frame = load_records(results).frame
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    # launcher.jobs = 2: two local workers, the machine's cores shared out between them.
    assert len(list((results / "mini" / ".submitit").rglob("*_log.err"))) == 2
    threads = {json.loads(p.read_text())["threads"] for p in (results / "mini").glob("*.json")}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}
    for path in (results / "mini").glob("*.json"):
        record = json.loads(path.read_text())
        acc = record["metrics"]["test_acc"]
        history = record["metrics"]["history"]
        assert len(history) == 3 and all(h["loss"] > 0 for h in history)
        assert acc == history[-1]["eval_acc"] and 0.0 <= acc <= 100.0
        assert (path.parent / record["adapter"]["file"]).is_file()
        assert record["versions"]["torch"] and record["run_id"] == path.stem
        if record["method"] == "heart_lora":
            mask = record["heart"]["mask"]
            assert all(row.count(0) == 5 and len(row) == 12 for row in mask)
            assert mask[0] == mask[1]  # global mode: the same heads in every layer
            scores = record["heart"]["scores"]["taylor"]
            assert len(scores) == 2 and len(scores[0]) == 2 and len(scores[0][0]) == 12
    leftovers = [p.name for p in (results / "mini").iterdir()
                 if p.suffix not in (".json", ".safetensors") and p.name != ".submitit"]
    assert leftovers == []
    # Not a terminal: one line per finished run, numbered, then the summary.
    out = capsys.readouterr().out
    finished = re.findall(r"(?m)^\[(\d)/3\] done ([0-9a-f]{16}) (\w+) ([\w-]+)$", out)
    assert [int(n) for n, *_ in finished] == [1, 2, 3], out
    assert {run_id for _, run_id, *_ in finished} == {p.stem for p in (results / "mini").glob("*.json")}
    assert out.rstrip().endswith("finished: 3 done, 0 failed, 0 skipped")
    mtimes = {p: p.stat().st_mtime_ns for p in (results / "mini").glob("*.json")}
    assert cli(["run", str(suite), "--executor", "local", "--results-dir", str(results)]) == 0
    assert "3 already done, 0 to run" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in (results / "mini").glob("*.json")}


def test_stored_adapter_reproduces_the_record(tmp_path: Path, synth_root: Path) -> None:
    """Adapter weights beside the record re-evaluate to the recorded accuracy."""
    import torch

    from heartbench.adapters import load_adapter
    from heartbench.backbones import build_backbone
    from heartbench.suite import load_suite
    from heartbench.train import evaluate, make_dataset, make_loader

    suite = suite_file(tmp_path, synth_root)
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results),
                "--only", "Heart-LoRA"]) == 0
    record = load_records(results).records[0]
    spec = next(r for r in load_suite(suite).runs if r.run_id == record["run_id"])
    torch.manual_seed(spec.seed)  # the backbone's random init must match the run's
    backbone = build_backbone("vit_test", spec.num_classes, drop_path_rate=0.1)
    load_adapter(results / "mini" / record["adapter"]["file"], backbone)
    loader = make_loader(make_dataset(spec, "test", 32, False), spec, False, torch.Generator())
    assert evaluate(backbone.model, loader, torch.device("cpu")) == pytest.approx(
        record["metrics"]["test_acc"], abs=1e-3)


def test_dry_run_prints_plan_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan is printed without data; then what would stop the run (the data, and the
    weights when they are not here either) is named, exit 2, nothing written."""
    assert cli(["run", str(REPO / "suites" / "vtab1k.toml"), "--dry-run",
                "--data-root", str(tmp_path / "nowhere")]) == 2
    out, err = capsys.readouterr()
    assert "19 tasks" in out and not (tmp_path / "nowhere").exists()
    assert str(tmp_path / "nowhere") in err.splitlines()[0]


def test_missing_data_is_one_line_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-vtab"
    proc = subprocess.run([sys.executable, "-m", "heartbench", "run",
                           str(REPO / "suites" / "vtab1k.toml"), "--data-root", str(missing),
                           "--results-dir", str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    # One line per problem (here the weights are missing too, and a closing count).
    assert str(missing) in lines[0] and "Traceback" not in proc.stderr
    assert all(line.startswith("heartbench run: error: ") for line in lines)
    assert not (tmp_path / "results" / "vtab1k").exists()


@pytest.mark.parametrize("suite, only, command", [
    ("vtab1k", [], "'python -m heartbench data prepare vtab1k --out {root}'"),
    ("swin_vtab1k", ["kitti", "dtd"],
     "'python -m heartbench data prepare vtab1k --out {root} --tasks dtd,kitti'"),
    ("rehearsal", ["kitti"],
     "'python -m heartbench data synth --full-size --tasks kitti --out {root}'"),
    ("fewshot", [], "heartbench cannot build the few-shot copy"),
])
def test_missing_data_names_the_command_that_makes_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], suite: str, only: list[str],
        command: str) -> None:
    """Every shipped suite whose data `run` cannot write itself names what makes it (or that
    nothing in heartbench does), for a missing root and for a missing task folder."""
    root = tmp_path / "data"
    args = ["run", str(REPO / "suites" / f"{suite}.toml"), "--data-root", str(root),
            "--results-dir", str(tmp_path / "results"),
            *[x for task in only for x in ("--only", task)]]
    for _ in range(2):  # the root missing, then present but without the task folders
        capsys.readouterr()
        assert cli(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        # The data's line first (the weights', the launcher's where Slurm is installed but
        # down, and a count follow).
        assert command.format(root=root) in lines[0], lines
        assert all(line.startswith("heartbench run: error: ") for line in lines), lines
        assert len(lines) == 1 or "problems (data, " in lines[-1], lines
        root.mkdir(exist_ok=True)
    assert list(root.iterdir()) == [] and not (tmp_path / "results").exists()


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node: str) -> Path:
    """Stand-in Slurm commands on PATH: sinfo reports one ``node`` (name|partition|CPUs|
    memory MB|gres), sbatch records its arguments and answers with job 4242."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch_calls.txt"
    fake = {"sbatch": f'#!/bin/sh\necho "$@" >> {log}\necho "Submitted batch job 4242"\n',
            "sinfo": f'#!/bin/sh\necho "{node}"\n', "srun": "#!/bin/sh\nexit 0\n",
            "squeue": "#!/bin/sh\nexit 0\n", "sacct": "#!/bin/sh\nexit 0\n",
            "scancel": "#!/bin/sh\nexit 0\n"}
    for name, body in fake.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_submission_writes_sbatch_with_requested_resources(
        tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What submitit would submit to Slurm, for the resources the suite asks for."""
    log = fake_slurm(tmp_path, monkeypatch, "node1|gpu-long|8|64000|gpu:a100:4(S:0-1)")
    suite = suite_file(tmp_path, synth_root)
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "slurm", "--no-wait",
                "--results-dir", str(results)]) == 0
    scripts = list((results / "mini" / ".submitit").rglob("*_submission.sh"))
    assert len(scripts) == 1
    text = scripts[0].read_text()
    for line in ("#SBATCH --partition=gpu-long", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --time=90", "#SBATCH --array=0-2%3",
                 "#SBATCH --signal=USR2@"):
        assert line in text, line
    assert "submitit" in text and log.read_text().strip()
    assert load_records(results).frame.empty  # nothing ran here


def test_slurm_defaults_fit_a_cpu_node(tmp_path: Path, synth_root: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A suite that asks for no resources, on a 2-CPU node without GPUs: no GPU (gres)
    request, the node's CPUs, their share of its memory, every run in one task (one wave:
    the node holds one such task at a time)."""
    fake_slurm(tmp_path, monkeypatch, "vm|debug*|2|4000|(null)")
    text = SUITE.format(data=synth_root)
    text = text[:text.index("[launcher]")] + text[text.index("[[methods]]"):]
    suite = tmp_path / "plain.toml"
    suite.write_text(text)
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "slurm", "--no-wait",
                "--results-dir", str(results)]) == 0
    assert "1 array task(s) of up to 3 runs (launcher.runs_per_task), each 2 CPUs, 3.9 GB," \
           " 0 GPUs, 1440 min, partition debug" in capsys.readouterr().out
    (script,) = (results / "mini" / ".submitit").rglob("*_submission.sh")
    text = script.read_text()
    assert "gpus" not in text and "gres" not in text
    for line in ("#SBATCH --partition=debug", "#SBATCH --cpus-per-task=2",
                 f"#SBATCH --mem={int(3.9 * 1024)}MB"):
        assert line in text, line
    (launch,) = (results / "mini" / ".submitit" / "launches").glob("*.json")
    (job,) = json.loads(launch.read_text())["jobs"]
    assert job["job"] == "4242" and len(job["runs"]) == 3


def test_launcher_threads_pins_the_thread_count(tmp_path: Path, synth_root: Path) -> None:
    """``launcher.threads`` overrides the default share of the cores, and the record says so."""
    import torch

    suite = suite_file(tmp_path, synth_root)
    suite.write_text(suite.read_text().replace("jobs = 2", "jobs = 2\nthreads = 3")
                     .replace("epochs = 3", "epochs = 2\nmax_train_batches = 2"))
    results = tmp_path / "results"
    before = torch.get_num_threads()
    try:
        assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results),
                    "--only", "Heart-LoRA"]) == 0
    finally:
        torch.set_num_threads(before)
    (path,) = (results / "mini").glob("*.json")
    assert json.loads(path.read_text())["threads"] == 3


def test_zero_gpus_is_a_cpu_request_on_a_gpu_partition(
        tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gpus_per_node = 0`` is valid: CPU jobs on a partition that has GPUs ask for none."""
    fake_slurm(tmp_path, monkeypatch, "node1|gpu-long|8|64000|gpu:a100:4(S:0-1)")
    suite = suite_file(tmp_path, synth_root)
    suite.write_text(suite.read_text().replace("gpus_per_node = 2", "gpus_per_node = 0"))
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "slurm", "--no-wait",
                "--results-dir", str(results)]) == 0
    (script, *more) = (results / "mini" / ".submitit").rglob("*_submission.sh")
    options = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
    assert not more and "#SBATCH --partition=gpu-long" in options
    assert not [o for o in options if "--gpus" in o or "--gres" in o], options


def test_refused_sbatch_is_one_line_and_leaves_no_folder(
        tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """sbatch's own refusal (after every check of ours passed): its error line, exit 2, and
    neither the results folder nor submitit's files are left behind."""
    fake_slurm(tmp_path, monkeypatch, "node1|gpu-long|8|64000|gpu:a100:4(S:0-1)")
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.write_text('#!/bin/sh\necho "sbatch: error: Batch job submission failed:'
                      ' Invalid account or account/partition combination specified" >&2\nexit 1\n')
    suite = suite_file(tmp_path, synth_root)
    results = tmp_path / "new" / "results"
    capsys.readouterr()
    rc = cli(["run", str(suite), "--executor", "slurm", "--results-dir", str(results)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Invalid account" in lines[0], lines
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_smoke_suite_trains_every_method(tmp_path: Path, synth_root: Path) -> None:
    """The shipped smoke suite: every registered method, one record each per task."""
    from heartbench.adapters import METHODS

    results = tmp_path / "results"
    assert cli(["run", str(REPO / "suites" / "smoke.toml"), "--executor", "debug",
                "--results-dir", str(results), "--data-root", str(synth_root)]) == 0
    frame = load_records(results).frame
    assert set(frame["method"]) == set(METHODS)
    assert len(frame) == 3 * len(METHODS) and set(frame["status"]) == {"done"}
    # Real learning, not chance (4 balanced classes): LoRA separates the colour task.
    lora = frame[(frame["method"] == "lora") & (frame["task"] == "colors")]
    assert float(lora["test_acc"].iloc[0]) > 50.0


def test_claim_of_another_host_is_taken_over_only_when_older_than_a_job(tmp_path: Path) -> None:
    from heartbench.runs import Claim

    path = tmp_path / "run.claim"
    path.write_text(json.dumps({"host": "node-that-died", "pid": 1, "job": "77_3"}))
    with Claim(path, max_age_s=3600) as claim:
        assert not claim.held  # fresh: its job may still be running
    assert path.exists()
    old = time.time() - 7200
    os.utime(path, (old, old))
    with Claim(path, max_age_s=3600) as claim:
        assert claim.held and json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()  # released on exit


def _protocol_suite(tmp_path: Path, data: Path, protocol: str) -> Path:
    text = SUITE.format(data=data).replace('seeds = [0]', f'seeds = [0]\neval_protocol = "{protocol}"')
    text = text.replace('config = { rank = 4 }\ntasks = ["colors", "position"]',
                        'config = { rank = 4 }\ngrid = { scale = [0.1, 10.0] }\ntasks = ["colors"]')
    text = text.replace("epochs = 3", "epochs = 4").replace("lr = 5e-3", "lr = 1e-2")
    path = tmp_path / f"{protocol}.toml"
    path.write_text(text)
    return path


def test_val_protocol_selects_on_val200_and_retrains(tmp_path: Path, synth_root: Path) -> None:
    suite = _protocol_suite(tmp_path, synth_root, "val")
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results),
                "--only", "LoRA"]) == 0
    (record,) = load_records(results).records
    selection = record["metrics"]["selection"]
    tried = selection["tried"]
    assert [t["grid"]["scale"] for t in tried] == [0.1, 10.0]
    best = max(tried, key=lambda t: t["val_acc"])  # first wins ties, like the selector
    assert selection["best"] == best["grid"] and record["metrics"]["val_acc"] == best["val_acc"]
    assert record["method_config"]["scale"] == best["grid"]["scale"]
    assert record["eval_protocol"] == "val"
    assert record["metrics"]["test_acc"] == record["metrics"]["history"][-1]["eval_acc"]
    # The run_id hashed the searched key's value before the search: `check` recomputes it.
    from heartbench.rerun import record_identity
    from heartbench.suite import run_id_of

    assert set(record["searched_from"]) == {"scale"}
    assert run_id_of(record_identity(record)) == record["run_id"]
    assert record["cpu"]["capability"]  # the CPU kind a re-run is compared against


def test_best_of_test_reports_the_maximum_of_periodic_tests(tmp_path: Path, synth_root: Path) -> None:
    suite = _protocol_suite(tmp_path, synth_root, "best_of_test")
    text = suite.read_text().replace("lr = 1e-2", "lr = 1e-2\neval_every = 1")
    suite.write_text(text)
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results),
                "--only", "LoRA"]) == 0
    for record in load_records(results).records:
        evals = [h["eval_acc"] for h in record["metrics"]["history"]]
        assert None not in evals and len(evals) == 4
        assert record["metrics"]["test_acc"] == max(evals)
        assert record["metrics"]["final_test_acc"] == evals[-1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_counts_runs_by_state() -> None:
    """On a terminal: one bar, runs finished / total, and the counts of every state (done,
    running, pending, requeued, failed, cancelled, left); failures also get a line."""
    from heartbench.status import Progress, RunState

    screen = _Terminal()
    progress = Progress(5, {f"r{i}": f"task{i} LoRA" for i in range(5)}, stream=screen)
    progress.update({"r0": RunState("done"), "r1": RunState("running"),
                     "r2": RunState("pending"), "r3": RunState("requeued", "job 7_3"),
                     "r4": RunState("pending")})
    assert "1/5" in screen.getvalue()
    assert "1 done, 1 running, 2 pending, 1 requeued, 3 left" in screen.getvalue()
    progress.update({"r0": RunState("done"), "r1": RunState("failed", "epoch 2: loss is nan"),
                     "r2": RunState("done"), "r3": RunState("cancelled", "job 7_3 was cancelled"),
                     "r4": RunState("running")})
    progress.close()
    text = screen.getvalue()
    assert "4/5" in text and "2 done, 1 running, 1 failed, 1 cancelled, 0 left" in text
    assert "failed r1 task1 LoRA: epoch 2: loss is nan" in text
    assert "cancelled r3 task3 LoRA: job 7_3 was cancelled" in text


def test_progress_shows_the_epoch_a_running_run_has_reached(tmp_path: Path) -> None:
    """A checkpoint leaves an epoch marker; status and the progress bar read it."""
    import socket

    import torch

    from heartbench.processes import process_start
    from heartbench.status import Progress, run_states
    from heartbench.suite import load_suite
    from heartbench.train import _cleanup, save_checkpoint

    suite = load_suite(suite_file(tmp_path, tmp_path / "data"))
    run = suite.runs[0]
    out = tmp_path / "results" / run.suite
    out.mkdir(parents=True)
    (out / f"{run.run_id}.claim").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "job": "_",
         "start": process_start(os.getpid())}))
    ckpt = out / f"{run.run_id}.final.ckpt"
    save_checkpoint(ckpt, {"epoch": 1, "model": {"w": torch.zeros(1)}})  # epochs 0 and 1 done
    states = run_states(tmp_path / "results", [run])
    assert states[run.run_id].state == "running"
    assert states[run.run_id].reason.startswith(f"epoch 2/{run.train['epochs']},")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress(1, {run.run_id: f"{run.task} {run.label}"}, stream=stream)
    progress.update(states)
    progress.close()
    assert f"{run.task} {run.label} epoch 2/{run.train['epochs']}" in stream.getvalue()

    _cleanup(out, run.run_id)  # a finished run leaves no marker behind
    assert not list(out.glob(f"{run.run_id}.*ckpt*"))


def test_status_archives_superseded_records(tmp_path: Path, synth_root: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Records a suite no longer plans (a default changed: new run ids) move, with their
    companions, to RESULTS/superseded/SUITE; planned ones stay; tables no longer read them."""
    from heartbench.suite import load_suite

    suite = suite_file(tmp_path, synth_root)
    planned = [r.run_id for r in load_suite(suite).runs]
    folder = tmp_path / "results" / "mini"
    folder.mkdir(parents=True)
    stale = "0123456789abcdef"
    assert stale not in planned
    for name in (f"{planned[0]}.json", f"{planned[0]}.safetensors", f"{stale}.json",
                 f"{stale}.safetensors", f"{stale}.final.ckpt.prev"):
        (folder / name).write_text(json.dumps({"run_id": name.split(".")[0], "status": "done"}))
    args = ["status", str(suite), "--results-dir", str(tmp_path / "results")]
    assert cli(args + ["--archive-superseded"]) == 0
    assert "moved 1 superseded record(s)" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [f"{planned[0]}.json",
                                                         f"{planned[0]}.safetensors"]
    aside = tmp_path / "results" / "superseded" / "mini"
    assert sorted(p.name for p in aside.iterdir()) == [
        f"{stale}.final.ckpt.prev", f"{stale}.json", f"{stale}.safetensors"]
    assert all(aside not in p.parents for p in load_records(tmp_path / "results").paths)
    assert not any(aside in p.parents for p, _ in load_records(tmp_path / "results").skipped)
    # Never replaces what is already aside: one line, exit 2, nothing moved (not even the
    # records before the clash).
    (folder / f"{stale}.json").write_text("{}")
    (folder / "0000000000000000.json").write_text("{}")
    assert cli(args + ["--archive-superseded"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{stale}.json already exists" in err[0]
    assert (folder / f"{stale}.json").read_text() == "{}"
    assert (folder / "0000000000000000.json").exists()
    assert not (aside / "0000000000000000.json").exists()


def test_dry_run_totals_count_the_val_search(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Under eval_protocol "val" a run trains each grid point, then the chosen one."""
    assert cli(["run", str(REPO / "suites" / "vtab_mini_fair.toml"), "--dry-run"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # 3 tasks x 5 methods x 3 seeds = 45 runs; 4 configurations each: 4 search trainings +
    # the final one, 3 epochs each.
    assert last.startswith("plan: 45 runs") and "plus 180 search trainings" in last
    assert "675 training epochs in all" in last and "eval protocol val" in last
