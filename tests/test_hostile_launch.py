"""Hostile and mistaken inputs to `run`, `status`, `data synth` and `check` (issue 24, items
7-12): each is one line on stderr naming the file, key or path and what was expected, exit
code 2, found before anything is submitted, and nothing written; claims that cannot belong
to a running worker never block a run."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbench.cli import main as cli

REPO = Path(__file__).resolve().parent.parent

SUITE = """
[suite]
name = "{name}"
benchmark = "synth"
data_root = "{data}"
seeds = {seeds}
{suite_extra}

[backbone]
name = "vit_test"
{backbone_extra}

[train]
epochs = 2
warmup_epochs = 1
batch_size = 16
max_train_batches = 1

[[methods]]
name = "lora"
label = "LoRA"
config = {{ rank = 4{config_extra} }}
{method_extra}
"""


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root)
    return root


def suite_file(folder: Path, data: Path, file_name: str = "mini.toml", **fields: str) -> Path:
    values = {"name": "mini", "seeds": "[0]", "suite_extra": "", "backbone_extra": "",
              "config_extra": "", "method_extra": 'tasks = ["colors"]', **fields}
    text = SUITE.format(data=data, **values)
    if "name" not in fields and file_name != "mini.toml":  # the name comes from the file
        text = text.replace('name = "mini"\n', "", 1)
    path = folder / file_name
    path.write_text(text)
    return path


def listing(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folders`` with its size and mtime: what 'nothing written' compares."""
    seen = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")] if folder.exists() else []:
            with contextlib.suppress(OSError):
                st = path.lstat()
                seen[str(path)] = (st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture
def no_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` must refuse before anything is submitted."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("submitted although the input is wrong")

    monkeypatch.setattr("heartbench.launch.submit", refuse)


def refused(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> str:
    """``args`` exit 2 with one stderr line holding every needle; that line."""
    capsys.readouterr()
    code = cli(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_args(suite: Path, results: Path, *extra: str) -> list[str]:
    return ["run", str(suite), "--executor", "debug", "--results-dir", str(results), *extra]


# ---------------------------------------------------------------------------
# 7: claims that cannot belong to a running worker
# ---------------------------------------------------------------------------
@pytest.fixture
def sleeper() -> Iterator[int]:
    """A live process of this host that is not a heartbench worker."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def write_claim(path: Path, age_s: float = 0.0, **holder: object) -> None:
    path.write_text(json.dumps({"host": socket.gethostname(), "job": "_", **holder}))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


def test_claim_of_a_live_process_that_is_not_a_worker_is_taken(tmp_path: Path, sleeper: int
                                                                 ) -> None:
    from heartbench.runs import Claim, claim_holder

    path = tmp_path / "run.claim"
    write_claim(path, pid=sleeper)  # as an older heartbench wrote it: no start time
    assert claim_holder(path) is None  # status does not say "running pid ..."
    with Claim(path) as claim:
        assert claim.held and json.loads(path.read_text())["pid"] == os.getpid()


def test_claim_of_a_reused_pid_is_taken(tmp_path: Path) -> None:
    """The pid lives (it is this very process) but started later than the claim's writer."""
    from heartbench.processes import process_start
    from heartbench.runs import Claim, claim_holder

    path = tmp_path / "run.claim"
    start = process_start(os.getpid())
    assert start is not None
    write_claim(path, pid=os.getpid(), start=start - 3600)
    assert claim_holder(path) is None
    with Claim(path) as claim:
        assert claim.held


def test_claim_older_than_a_job_is_taken_on_this_host_too(tmp_path: Path) -> None:
    from heartbench.processes import process_start
    from heartbench.runs import Claim, claim_holder

    path = tmp_path / "run.claim"
    write_claim(path, age_s=2 * 86400, pid=os.getpid(), start=process_start(os.getpid()))
    assert claim_holder(path, max_age_s=3600) is None
    with Claim(path, max_age_s=3600) as claim:
        assert claim.held


def test_claim_of_a_live_worker_still_blocks(tmp_path: Path) -> None:
    """The other side: the process that wrote the claim, alive and young, keeps its run."""
    from heartbench.runs import Claim, claim_holder

    path = tmp_path / "run.claim"
    with Claim(path) as first:
        assert first.held and claim_holder(path) is not None
        with Claim(path) as second:
            assert not second.held


def test_run_trains_a_run_whose_claim_names_another_program(
        tmp_path: Path, synth_root: Path, sleeper: int) -> None:
    from heartbench.suite import load_suite

    suite = suite_file(tmp_path, synth_root)
    (run,) = load_suite(suite).runs
    folder = tmp_path / "results" / "mini"
    folder.mkdir(parents=True)
    write_claim(folder / f"{run.run_id}.claim", age_s=2 * 86400, pid=sleeper)
    assert cli(run_args(suite, tmp_path / "results")) == 0
    assert json.loads((folder / f"{run.run_id}.json").read_text())["status"] == "done"


# ---------------------------------------------------------------------------
# 8: plans that select nothing
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("where, fields", [
    ("suite.tasks", {"suite_extra": "tasks = []", "method_extra": ""}),
    ("methods[0].tasks", {"method_extra": "tasks = []"}),
])
@pytest.mark.parametrize("dry", [True, False])
def test_an_empty_task_list_is_refused(tmp_path: Path, synth_root: Path,
                                       capsys: pytest.CaptureFixture[str], where: str,
                                       fields: dict[str, str], dry: bool) -> None:
    suite = suite_file(tmp_path, synth_root, **fields)
    refused(capsys, run_args(suite, tmp_path / "results", *(["--dry-run"] if dry else [])),
            str(suite), where, "non-empty")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("dry", [True, False])
def test_only_pattern_matching_nothing_is_refused(tmp_path: Path, synth_root: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  dry: bool) -> None:
    suite = suite_file(tmp_path, synth_root)
    refused(capsys, run_args(suite, tmp_path / "results", "--only", "colors", "--only",
                             "nomatch*", *(["--dry-run"] if dry else [])),
            "--only 'nomatch*'", "colors", "LoRA")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------
# 9 and 12: found before submission, said clearly
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fields, needles", [
    ({"seeds": "[99999999999999999999]"}, ("suite.seeds", "2**64 - 1")),
    ({"config_extra": ", scale = inf"}, ("scale", "finite")),
    ({"config_extra": ", scale = -inf"}, ("scale", "finite")),
])
def test_values_no_run_can_use_are_refused_at_load(tmp_path: Path, synth_root: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   fields: dict[str, str],
                                                   needles: tuple[str, ...]) -> None:
    suite = suite_file(tmp_path, synth_root, **fields)
    for extra in (["--dry-run"], []):
        refused(capsys, run_args(suite, tmp_path / "results", *extra), str(suite), *needles)
    assert not (tmp_path / "results").exists()


def test_timm_weights_out_of_reach_are_refused_before_submission(tmp_path: Path,
                                                                 synth_root: Path) -> None:
    """Offline with an empty cache: one line naming backbone.weights, no results folder.
    A subprocess, since huggingface_hub reads HF_HUB_OFFLINE when it is imported."""
    suite = suite_file(tmp_path, synth_root,
                       backbone_extra='weights = "timm"').read_text()
    suite = suite.replace('name = "vit_test"', 'name = "vit_tiny_patch16_224.augreg_in21k"')
    path = tmp_path / "timm.toml"
    path.write_text(suite)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "heartbench", "run", str(path), "--executor",
                           "debug", "--results-dir", str(tmp_path / "results")],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and "backbone.weights = 'timm'" in lines[0], proc.stderr
    assert "vit_tiny_patch16_224.augreg_in21k" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def copy_of(root: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(root, data)
    return data


def test_list_file_with_a_line_not_in_utf8_is_refused(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str],
        no_submission: None) -> None:
    data = copy_of(synth_root, tmp_path)
    lst = data / "colors" / "test.txt"
    lines = lst.read_bytes().splitlines(keepends=True)
    lst.write_bytes(b"".join(lines[:2]) + "caf\u00e9.jpg 0\n".encode("latin-1") + b"".join(lines[2:]))
    refused(capsys, run_args(suite_file(tmp_path, data), tmp_path / "results"),
            str(lst), "line 3", "UTF-8")
    assert not (tmp_path / "results").exists()


def test_list_file_with_a_byte_order_mark_reads_as_without(tmp_path: Path,
                                                            synth_root: Path) -> None:
    from heartbench.data.tasks import resolve_task
    from heartbench.data.vtab import read_vtab_list, validate_vtab

    data = copy_of(synth_root, tmp_path)
    lst = data / "colors" / "test.txt"
    plain = read_vtab_list(data, resolve_task("synth", "colors"), "test")
    lst.write_bytes(b"\xef\xbb\xbf" + lst.read_bytes())
    validate_vtab(data, "synth", ["colors"], ("test",))  # no "\ufeff..." image missing
    assert read_vtab_list(data, resolve_task("synth", "colors"), "test") == plain


def test_suite_file_with_a_byte_order_mark_loads(tmp_path: Path, synth_root: Path) -> None:
    from heartbench.suite import load_suite

    suite = suite_file(tmp_path, synth_root)
    plain = [r.run_id for r in load_suite(suite).runs]
    suite.write_bytes(b"\xef\xbb\xbf" + suite.read_bytes())
    assert [r.run_id for r in load_suite(suite).runs] == plain


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_twin_task_folder_that_is_a_broken_symlink_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_submission: None,
        kind: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    link = data / "colors"
    if kind == "dangling":
        link.symlink_to(tmp_path / "gone")
    else:
        link.symlink_to(link)
    expected = "dangling symlink" if kind == "dangling" else "symlink loop"
    refused(capsys, run_args(suite_file(tmp_path, data), tmp_path / "results"),
            str(link), expected)
    assert sorted(p.name for p in data.iterdir()) == ["colors"]
    assert not (tmp_path / "gone").exists() and not (tmp_path / "results").exists()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this user cannot write into: chmod for a plain user; root writes through
    modes, so for root a read-only tmpfs (skipped where it cannot be mounted)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("root, and no read-only file system can be mounted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_suite_results_folder_not_writable_is_refused(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str],
        no_submission: None, read_only_dir: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "mini").symlink_to(read_only_dir)  # results/<suite>/ is the read-only folder
    refused(capsys, run_args(suite_file(tmp_path, synth_root), results),
            "results folder of suite mini", "not writable", str(results / "mini"))


def test_a_folder_where_a_record_belongs_is_refused_before_training(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str],
        no_submission: None) -> None:
    from heartbench.suite import load_suite

    suite = suite_file(tmp_path, synth_root)
    (run,) = load_suite(suite).runs
    record = tmp_path / "results" / "mini" / f"{run.run_id}.json"
    record.mkdir(parents=True)
    before = listing(tmp_path / "results")
    refused(capsys, run_args(suite, tmp_path / "results"), str(record), "is a folder",
            "record")
    assert listing(tmp_path / "results") == before


def test_disk_full_at_submission_names_the_folder_and_leaves_nothing(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit writes its job files when it submits: ENOSPC there is one line naming where,
    and neither the job files nor the .submitit folder stay behind."""
    import submitit

    def full(self: object, *args: object, **kwargs: object) -> None:
        folder = Path(str(self.folder))  # type: ignore[attr-defined]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "half-written.pkl").write_bytes(b"\0" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", full)
    results = tmp_path / "results"
    (results / "mini").mkdir(parents=True)  # an existing suite folder (earlier records)
    refused(capsys, ["run", str(suite_file(tmp_path, synth_root)), "--executor", "local",
                     "--results-dir", str(results)],
            "refused the submission", str(results / "mini" / ".submitit"), "No space left")
    assert list((results / "mini").iterdir()) == []


# ---------------------------------------------------------------------------
# 12: messages that say what a path actually is
# ---------------------------------------------------------------------------
def test_suite_file_whose_name_cannot_name_a_results_folder(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = suite_file(tmp_path, synth_root, file_name="my suite.toml")
    for extra in (["--dry-run"], []):
        refused(capsys, run_args(suite, tmp_path / "results", *extra),
                str(suite), "suite.name", "'my suite'", "no spaces")
    assert not (tmp_path / "results").exists()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pth"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, expected", [
    ("folder", "is a folder"), ("fifo", "is a FIFO"), ("zero", "is a character device"),
])
def test_weights_that_are_not_a_file_say_what_they_are(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str],
        no_submission: None, kind: str, expected: str) -> None:
    if kind == "folder":
        weights = tmp_path / "weights.pth"
        weights.mkdir()
    elif kind == "fifo":
        weights = tmp_path / "weights.pth"
        os.mkfifo(weights)  # opening it would block: it must not be opened
    else:
        weights = Path("/dev/zero")
    suite = suite_file(tmp_path, synth_root, backbone_extra=f'weights = "{weights}"')
    refused(capsys, run_args(suite, tmp_path / "results"), str(weights), expected)
    assert not (tmp_path / "results").exists()


def test_suite_path_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, ["run", str(tmp_path), "--dry-run"], str(tmp_path), "is a folder")


def test_check_results_dir_that_is_a_file(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "results.json"
    path.write_text("{}")
    refused(capsys, ["check", "--results-dir", str(path), "--skip", "summary"], str(path),
            "is a file")


def test_results_folder_that_is_a_symlink_loop(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str],
        no_submission: None) -> None:
    results = tmp_path / "results"
    results.symlink_to(results)
    refused(capsys, run_args(suite_file(tmp_path, synth_root), results), str(results),
            "symlink loop")


# ---------------------------------------------------------------------------
# 11: tracebacks
# ---------------------------------------------------------------------------
def test_status_ignores_a_stray_file_among_the_launches(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = suite_file(tmp_path, synth_root)
    launches = tmp_path / "results" / "mini" / ".submitit" / "launches"
    launches.mkdir(parents=True)
    (launches / "abc.json").write_text("{}")
    (launches / "1-7.json").write_text("[1, 2]")  # a manifest's name, not its content
    capsys.readouterr()
    assert cli(["status", str(suite), "--results-dir", str(tmp_path / "results")]) == 0
    captured = capsys.readouterr()
    assert str(launches / "abc.json") in captured.err and "1 not submitted" in captured.out


@pytest.mark.parametrize("case", ["out-is-a-file", "seed", "size", "read-only"])
def test_data_synth_refuses_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           case: str, request: pytest.FixtureRequest) -> None:
    out, extra, needles = tmp_path / "out", [], ["--out"]
    if case == "out-is-a-file":
        out.write_text("not a folder")
        needles = [str(out), "is a file"]
    elif case == "seed":
        extra, needles = ["--seed", "-1"], ["--seed -1", ">= 0"]
    elif case == "size":
        extra, needles = ["--size", "0"], ["--size 0", "at least 8"]
    else:
        out = request.getfixturevalue("read_only_dir") / "synth"
        needles = [str(out.parent), "not writable"]
    before = listing(tmp_path)
    refused(capsys, ["data", "synth", "--out", str(out), *extra], *needles)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("case", ["latin-1", "folder"])
def test_check_summary_that_is_not_a_csv_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              case: str) -> None:
    results = tmp_path / "results"
    results.mkdir()
    summary = tmp_path / "summary.csv"
    if case == "folder":
        summary.mkdir()
    else:
        summary.write_bytes("suite,run_id\ncaf\u00e9,x\n".encode("latin-1"))
    expected = "is a folder" if case == "folder" else "not UTF-8"
    refused(capsys, ["check", "--results-dir", str(results), "--summary", str(summary)],
            str(summary), expected)


# ---------------------------------------------------------------------------
# Further hostile inputs (this session's own)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("holder", [{"pid": 10**30}, {"pid": "abc"}, {"pid": None},
                                    {"pid": "self", "start": "yesterday"}])
def test_claims_with_nonsense_holders_are_taken(tmp_path: Path, holder: dict[str, object]
                                                ) -> None:
    from heartbench.runs import Claim, claim_holder

    path = tmp_path / "run.claim"
    write_claim(path, **{k: os.getpid() if v == "self" else v for k, v in holder.items()})
    assert claim_holder(path) is None
    with Claim(path) as claim:
        assert claim.held


def test_suite_named_like_a_folder_heartbench_keeps(tmp_path: Path, synth_root: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    suite = suite_file(tmp_path, synth_root, name="superseded")
    refused(capsys, run_args(suite, tmp_path / "results", "--dry-run"), str(suite),
            "suite.name 'superseded'")


def test_a_folder_where_a_claim_belongs_is_refused(tmp_path: Path, synth_root: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   no_submission: None) -> None:
    from heartbench.suite import load_suite

    suite = suite_file(tmp_path, synth_root)
    (run,) = load_suite(suite).runs
    claim = tmp_path / "results" / "mini" / f"{run.run_id}.claim"
    claim.mkdir(parents=True)
    refused(capsys, run_args(suite, tmp_path / "results"), str(claim), "is a folder", "claim")


def test_status_results_dir_that_is_a_file(tmp_path: Path, synth_root: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.write_text("")
    refused(capsys, ["status", str(suite_file(tmp_path, synth_root)), "--results-dir",
                     str(results)], str(results), "is a file")


def test_list_file_that_is_a_fifo_says_so(tmp_path: Path, synth_root: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          no_submission: None) -> None:
    data = copy_of(synth_root, tmp_path)
    lst = data / "colors" / "test.txt"
    lst.unlink()
    os.mkfifo(lst)  # reading it would block: it must not be opened
    refused(capsys, run_args(suite_file(tmp_path, data), tmp_path / "results"), str(lst),
            "is a FIFO")


def test_data_synth_never_replaces_a_file_where_a_task_goes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "colors").write_text("my notes")
    refused(capsys, ["data", "synth", "--out", str(out)], str(out / "colors"), "is a file")
    assert (out / "colors").read_text() == "my notes"


def test_reuse_skips_a_source_without_its_adapter_and_odd_folders(
        tmp_path: Path, synth_root: Path) -> None:
    """A done record elsewhere whose adapter file is gone is not a verified result; a
    folder whose name no suite can have is not a suite: neither stops or feeds the reuse."""
    from heartbench.runs import reuse_done
    from heartbench.suite import load_suite

    suite = suite_file(tmp_path, synth_root)
    (spec,) = load_suite(suite).runs
    trained = tmp_path / "trained"  # a real, verifiable record and adapter to offer for reuse
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(trained)]) == 0
    record = json.loads((trained / "mini" / f"{spec.run_id}.json").read_text())
    adapter = (trained / "mini" / f"{spec.run_id}.safetensors").read_bytes()
    results = tmp_path / "results"
    for folder in ("other", "my notes"):
        (results / folder).mkdir(parents=True)
        (results / folder / f"{spec.run_id}.json").write_text(
            json.dumps({**record, "suite": folder}))
    assert reuse_done(results, [spec]) == {}  # no adapter file beside the record
    (results / "other" / f"{spec.run_id}.safetensors").write_bytes(b"weights")
    assert reuse_done(results, [spec]) == {}  # an adapter file that is not the record's
    (results / "other" / f"{spec.run_id}.safetensors").write_bytes(adapter)
    assert reuse_done(results, [spec]) == {spec.run_id: "other"}
    assert (results / "mini" / f"{spec.run_id}.safetensors").read_bytes() == adapter
