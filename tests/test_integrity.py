"""Wrong results that look right (issue 24, items 1-6): what a table averages, what a record
and its adapter must be to count as done, what figure5 accepts.

Table and record tests need no torch; the training and figure5 tests build the tiny vit_test
backbone (seconds)."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import struct
from pathlib import Path

import pytest

from heartbench.report import stats

ROOT = Path(__file__).resolve().parents[1]


def record(task: str = "animals", label: str = "LoRA", method: str = "lora", seed: int = 0,
           acc: float | None = 70.0, epochs: int = 3, backbone: str = "vit_mini",
           suite: str = "vtab_mini", config: dict | None = None, extra: dict | None = None
           ) -> dict:
    """A done VTAB-mini record whose run_id hashes everything here (so two differ)."""
    group = {"animals": "natural", "mnist": "natural", "histology": "specialized",
             "counting": "structured"}[task]
    train = {"epochs": epochs, "lr": 0.005, "warmup_epochs": 1, "batch_size": 64}
    ident = [task, label, method, seed, epochs, backbone, suite, config]
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    out = {
        "schema": 1, "run_id": run_id, "status": "done", "suite": suite,
        "benchmark": "vtab_mini", "task": task, "group": group, "shots": None,
        "method": method, "label": label, "method_config": dict(config or {"rank": 8}),
        "grid": {}, "search": {}, "num_classes": 10,
        "backbone": {"name": backbone, "weights": None, "kwargs": {}, "drop_path_rate": 0.1},
        "train": train, "seed": seed, "eval_protocol": "last",
        "metrics": {"test_acc": acc, "val_acc": None, "history": []}, "heart": None,
        "adapter": {"stored_bytes": 1000, "head_bytes": 10, "trainable_params": 10,
                    "file": f"{run_id}.safetensors"},
    }
    out.update(extra or {})
    return out


def cells(records: list[dict]) -> dict[tuple[int, str, str], tuple[float, int]]:
    """(table, row name, task) -> (mean, seeds) over every measured block."""
    out = {}
    for block in stats.build_blocks(records):
        for row in block.rows:
            for task, cell in row.cells.items():
                out[(block.table, row.name, task)] = (cell.mean, cell.n)
    return out


# ---------------------------------------------------------------------------
# 1. A cell averages only records that agree on everything but the seed
# ---------------------------------------------------------------------------
def test_cell_never_averages_two_training_lengths():
    short, long = record(acc=45.3, epochs=3), record(acc=98.4, epochs=40)
    got = cells([short, long])
    table1 = {k: v for k, v in got.items() if k[0] == 1}
    # Two rows, each its own record: never the mean 71.85 printed as one seed-0 cell.
    assert sorted(table1.values()) == [(45.3, 1), (98.4, 1)]
    assert not any(math.isclose(m, (45.3 + 98.4) / 2) for m, _ in got.values())
    names = {k[1] for k in table1}
    assert names == {"LoRA [epochs 3]", "LoRA [epochs 40]"}


def test_cell_never_averages_two_backbones():
    got = cells([record(acc=30.0, backbone="vit_test"), record(acc=60.0, backbone="vit_mini")])
    table1 = {k: v for k, v in got.items() if k[0] == 1}
    assert sorted(table1.values()) == [(30.0, 1), (60.0, 1)]
    assert {k[1] for k in table1} == {"LoRA [backbone vit_mini]", "LoRA [backbone vit_test]"}


def test_a_foreign_record_does_not_move_a_cell():
    """Three seeds of the suite's LoRA; one 1-epoch LoRA record of another suite added to the
    same folder must leave the three-seed cell at their own mean and std."""
    accs = {0: 41.0, 1: 44.5, 2: 46.2}
    mine = [record(seed=s, acc=a) for s, a in accs.items()]
    before = cells(mine)[(1, "LoRA", "animals")]
    assert before[1] == 3 and math.isclose(before[0], statistics.mean(accs.values()))
    stray = record(seed=0, acc=20.0, epochs=1, suite="other")
    after = cells([*mine, stray])
    three = [v for k, v in after.items() if k[0] == 1 and k[2] == "animals" and v[1] == 3]
    assert three == [before]


def test_caption_seed_statement_is_true_for_every_cell():
    records = [record(acc=45.3, epochs=3), record(acc=98.4, epochs=40),
               record(acc=50.0, epochs=3, task="histology"),
               record(acc=51.0, epochs=3, seed=1), record(acc=52.0, epochs=3, task="histology",
                                                          seed=1)]
    for block in stats.build_blocks(records):
        for row in block.rows:
            for cell in row.cells.values():
                assert tuple(sorted(cell.by_seed)) == block.seed_set
                # every record of a cell has the same everything-but-the-seed
                assert len({json.dumps({**r["train"], "b": r["backbone"]}, sort_keys=True)
                            for r in cell.records}) == 1


# ---------------------------------------------------------------------------
# 4. Record values validated before they reach a table or figure
# ---------------------------------------------------------------------------
BAD_ACCURACIES = [float("nan"), float("inf"), -float("inf"), 1e9, -0.5, 100.01, "70", True]


def write_json(folder: Path, rec: dict) -> Path:
    """A record file as a hand edit or a broken writer would leave it (NaN allowed)."""
    path = folder / rec["suite"] / f"{rec['run_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.mark.parametrize("bad", BAD_ACCURACIES, ids=repr)
def test_invalid_accuracy_is_skipped_by_name(tmp_path, bad):
    from heartbench.results import load_records

    good = record(acc=50.0, seed=1)
    broken = record(acc=bad)
    write_json(tmp_path, good)
    path = write_json(tmp_path, broken)
    loaded = load_records(tmp_path)
    assert [r["run_id"] for r in loaded.records] == [good["run_id"]]
    assert [p for p, _ in loaded.skipped] == [path]
    assert "metrics.test_acc" in loaded.skipped[0][1] and "[0, 100]" in loaded.skipped[0][1]


def test_invalid_val_acc_and_size_are_skipped(tmp_path):
    from heartbench.results import load_records

    val = record(extra={"metrics": {"test_acc": 50.0, "val_acc": float("nan")}})
    size = record(seed=1)
    size["adapter"]["stored_bytes"] = -3
    write_json(tmp_path, val)
    write_json(tmp_path, size)
    reasons = sorted(r for _, r in load_records(tmp_path).skipped)
    assert len(reasons) == 2 and "adapter.stored_bytes" in reasons[0]
    assert "metrics.val_acc" in reasons[1]


def run_cli(*argv: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "heartbench", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("bad", [float("nan"), 1e9])
def test_tables_names_a_bad_record_and_writes_nothing(tmp_path, bad):
    results = tmp_path / "res"
    write_json(results, record(acc=50.0, seed=1))
    path = write_json(results, record(acc=bad))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("tables", "--results-dir", str(results), "--out", str(out),
                                   "--pdf", "skip", "--no-figures")
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stdout.splitlines() if str(path) in line]
    assert len(lines) == 1 and "metrics.test_acc" in lines[0]
    assert not out.exists()
    # Told to skip it: the table shows the good record only, never the bad value.
    code, stdout, stderr = run_cli("tables", "--results-dir", str(results), "--out", str(out),
                                   "--pdf", "skip", "--no-figures", "--skip-invalid")
    assert code == 0, stderr
    text = (out / "table1_vtab_mini.tex").read_text()
    assert "50.0" in text and "500000" not in text and "nan" not in text.lower()


def test_check_fails_on_a_nan_record(tmp_path):
    results = tmp_path / "res"
    path = write_json(results, record(acc=float("nan")))
    code, stdout, stderr = run_cli("check", "--results-dir", str(results), "--reproduce", "0",
                                   "--skip", "summary,paper,paper-text")
    assert code == 1 and "Traceback" not in stderr
    assert [line for line in stdout.splitlines() if str(path) in line and "FAIL" in line]


# ---------------------------------------------------------------------------
# 3. A run is stored done only if it is a result
# ---------------------------------------------------------------------------
SUITE = """
[suite]
name = "{name}"
benchmark = "synth"
data_root = "{data}"
tasks = ["colors"]
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = {epochs}
warmup_epochs = {warmup}
batch_size = 16
lr = {lr}
max_train_batches = {batches}

[[methods]]
name = "{method}"
config = {config}
"""


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root)
    return root


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plan(folder: Path, data: Path, name: str = "integ", epochs: int = 1, warmup: int = 0,
         lr: str = "5e-3", batches: int = 1, method: str = "lora",
         config: str = "{ rank = 4 }") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SUITE.format(name=name, data=data, epochs=epochs, warmup=warmup, lr=lr,
                                 batches=batches, method=method, config=config))
    return path


def test_a_last_step_that_diverges_fails_the_run(tmp_path, synth_root, one_thread):
    """The issue's case: one step at lr 1e30 leaves finite loss history but a broken adapter."""
    from heartbench.suite import load_suite
    from heartbench.train import execute

    spec = load_suite(plan(tmp_path, synth_root, lr="1e30")).runs[0]
    record = execute(spec, tmp_path / "res")
    assert record["status"] == "failed", record["metrics"]
    assert "diverged" in record["error"]["reason"]
    assert record["metrics"]["test_acc"] is None
    assert not (tmp_path / "res" / "integ" / f"{spec.run_id}.safetensors").exists()


def test_a_healthy_run_is_still_done(tmp_path, synth_root, one_thread):
    from heartbench.suite import load_suite
    from heartbench.train import execute

    spec = load_suite(plan(tmp_path, synth_root)).runs[0]
    assert execute(spec, tmp_path / "res")["status"] == "done"


def test_heart_lora_mask_after_the_last_epoch_is_refused_at_planning(tmp_path, synth_root):
    from heartbench.errors import UserError
    from heartbench.suite import load_suite

    path = plan(tmp_path, synth_root, epochs=3, warmup=1, method="heart_lora",
                config="{ rank = 4, ne = 2, mask_epoch = 10 }")
    with pytest.raises(UserError) as err:
        load_suite(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "mask_epoch = 10" in message and "train.epochs = 3" in message
    # mask_epoch = -1 masks after the warm-up: a warm-up as long as the run is refused too.
    path = plan(tmp_path, synth_root, epochs=2, warmup=2, method="heart_lora",
                config="{ rank = 4, ne = 2 }")
    with pytest.raises(UserError, match="train.warmup_epochs"):
        load_suite(path)
    # ne = 0 promises no mask: accepted.
    load_suite(plan(tmp_path, synth_root, epochs=3, warmup=1, method="heart_lora",
                    config="{ rank = 4, ne = 0, mask_epoch = 10 }"))


def test_heart_lora_that_never_masked_fails_at_the_end(tmp_path, synth_root, one_thread):
    """Past planning (a spec built by hand, an old pickled job): the trainer itself fails it."""
    from dataclasses import replace

    from heartbench.suite import load_suite
    from heartbench.train import execute

    spec = load_suite(plan(tmp_path, synth_root, epochs=2, warmup=1, method="heart_lora",
                           config="{ rank = 4, ne = 2 }")).runs[0]
    spec = replace(spec, method_config={**spec.method_config, "mask_epoch": 10})
    record = execute(spec, tmp_path / "res")
    assert record["status"] == "failed"
    assert "no head was masked" in record["error"]["reason"]
    # The same run masking in time is done, with its mask.
    spec = replace(spec, method_config={**spec.method_config, "mask_epoch": 1})
    record = execute(spec, tmp_path / "res2")
    assert record["status"] == "done" and record["heart"]["mask"] is not None


# ---------------------------------------------------------------------------
# 2. Records and adapters verified
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synth_root: Path):
    """One healthy LoRA run on the synth twin: (suite file, results folder, spec)."""
    import torch

    from heartbench.suite import load_suite
    from heartbench.train import execute

    folder = tmp_path_factory.mktemp("trained")
    suite = plan(folder, synth_root, name="adapters")
    spec = load_suite(suite).runs[0]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        execute(spec, folder / "res")
    finally:
        torch.set_num_threads(before)
    return suite, folder / "res", spec


@pytest.fixture
def copy_of(trained, tmp_path):
    """A private copy of the trained results: (results folder, spec, record file, adapter)."""
    import shutil

    suite, results, spec = trained
    mine = tmp_path / "res"
    shutil.copytree(results, mine)
    folder = mine / spec.suite
    return mine, spec, folder / f"{spec.run_id}.json", folder / f"{spec.run_id}.safetensors"


def test_record_stores_adapter_size_names_and_sha256(copy_of):
    from safetensors import safe_open

    _, _, record_file, adapter = copy_of
    stored = json.loads(record_file.read_text())["adapter"]
    with safe_open(str(adapter), framework="pt") as f:
        names = sorted(f.keys())
    assert stored["file_bytes"] == adapter.stat().st_size
    assert stored["tensors"] == names and any(n.startswith("head.") for n in names)
    # A content hash: the same tensors and metadata written with the metadata keys in
    # another order (safetensors fixes no order) hash the same; one changed byte does not.
    from heartbench.results import adapter_sha256

    data = adapter.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    meta = header.pop("__metadata__")
    shuffled = json.dumps({"__metadata__": dict(reversed(list(meta.items()))), **header},
                          separators=(",", ":")).encode()
    shuffled += b" " * (length - len(shuffled))
    assert len(shuffled) == length and shuffled != data[8:8 + length]
    twin = adapter.with_name("twin.safetensors")
    twin.write_bytes(data[:8] + shuffled + data[8 + length:])
    assert adapter_sha256(twin) == stored["sha256"] == adapter_sha256(adapter)
    alter(twin)
    assert adapter_sha256(twin) != stored["sha256"]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def alter(path: Path) -> None:
    """Same size, same header, one byte of tensor data changed."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def null_adapter(record_file: Path) -> None:
    rec = json.loads(record_file.read_text())
    rec["adapter"] = None
    record_file.write_text(json.dumps(rec))


def make_old(record_file: Path) -> None:
    """The record as written before the adapter facts existed."""
    rec = json.loads(record_file.read_text())
    for key in ("file_bytes", "sha256", "tensors"):
        rec["adapter"].pop(key)
    record_file.write_text(json.dumps(rec, indent=1, sort_keys=True))


DAMAGE = {
    "truncated": (lambda rec, ad: truncate(ad), "bytes"),
    "deleted": (lambda rec, ad: ad.unlink(), "missing"),
    "altered": (lambda rec, ad: alter(ad), "changed since"),
    "null": (lambda rec, ad: null_adapter(rec), "adapter is null"),
    "old record, truncated": (lambda rec, ad: (make_old(rec), truncate(ad)), "truncated"),
    "old record, deleted": (lambda rec, ad: (make_old(rec), ad.unlink()), "missing"),
}


def run_check(results: Path, capsys) -> tuple[int, str]:
    import argparse

    from heartbench.report import check

    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    # A folder of its own: no twin summary, no committed paper/ and (a fresh clone) no
    # paper text to compare with, so those sections are switched off by name.
    code = check.main(parser.parse_args(["--results-dir", str(results), "--reproduce", "0",
                                         "--skip", "summary,paper,paper-text"]))
    return code, capsys.readouterr().out


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_adapter_is_not_done_anywhere(copy_of, damage, capsys):
    from heartbench.runs import is_done
    from heartbench.status import run_states

    results, spec, record_file, adapter = copy_of
    assert is_done(results, spec)  # intact: done
    harm, says = DAMAGE[damage]
    harm(record_file, adapter)
    capsys.readouterr()
    assert not is_done(results, spec, report=True)
    skip_line = capsys.readouterr().out
    assert spec.run_id in skip_line and says in skip_line and "rerunning" in skip_line
    state = run_states(results, [spec])[spec.run_id]
    assert state.state != "done" and says in state.reason
    code, out = run_check(results, capsys)
    assert code == 1
    fails = [line for line in out.splitlines() if "FAIL" in line and str(record_file) in line]
    assert len(fails) == 1 and says in fails[0]


def test_adapter_deliberately_not_kept_is_done_everywhere(copy_of, capsys):
    from heartbench.runs import is_done
    from heartbench.status import run_states

    results, spec, record_file, adapter = copy_of
    rec = json.loads(record_file.read_text())
    rec["adapter"]["kept"] = False
    record_file.write_text(json.dumps(rec))
    adapter.unlink()
    assert is_done(results, spec, report=True)
    assert run_states(results, [spec])[spec.run_id].state == "done"
    code, out = run_check(results, capsys)
    assert code == 0 and "1 deliberately not kept" in out


def test_old_record_verifies_and_seals_without_retraining(copy_of, capsys):
    import argparse

    from heartbench.report import check
    from heartbench.runs import is_done

    results, spec, record_file, adapter = copy_of
    sealed = json.loads(record_file.read_text())
    make_old(record_file)
    assert is_done(results, spec)  # an intact old record stays done
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    assert check.main(parser.parse_args(["--results-dir", str(results), "--seal-adapters"])) == 0
    assert "sealed 1 record" in capsys.readouterr().out
    assert json.loads(record_file.read_text()) == sealed  # the facts training had stored
    alter(adapter)  # now the hash catches what the header cannot
    assert not is_done(results, spec)


# ---------------------------------------------------------------------------
# 5. figure5 refuses what is not its pair: one line, exit 2
# ---------------------------------------------------------------------------
def fig5_record(folder: Path, method: str, run_id: str, config: dict | None = None,
                backbone: str = "vit_mini") -> Path:
    """A done record with a real (untrained) adapter beside it, as train.execute leaves it."""
    import torch

    from heartbench.adapters import create_method, save_adapter
    from heartbench.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone(backbone, 4)
    config = dict(config if config is not None else {"rank": 4})
    method_obj = create_method(method, config)
    method_obj.attach(model)
    mask = None
    if method == "heart_lora" and method_obj.config.ne > 0:
        mask = [[0] * method_obj.config.ne + [1] * (
            s.num_heads - method_obj.config.ne) for s in model.sites]
        method_obj.apply_mask(mask)
    sub = folder / "suite"
    sub.mkdir(parents=True, exist_ok=True)
    adapter = sub / f"{run_id}.safetensors"
    save_adapter(method_obj, adapter)
    rec = {
        "schema": 1, "status": "done", "run_id": run_id, "suite": "suite",
        "benchmark": "vtab_mini", "task": "histology", "group": "specialized",
        "label": {"bilora": "Bi-LoRA", "lora": "LoRA"}.get(method, "Heart-LoRA"),
        "method": method, "method_config": method_obj.config.to_dict(), "grid": {}, "seed": 0,
        "shots": None, "num_classes": 4,
        "backbone": {"name": backbone, "weights": None, "kwargs": {}},
        "adapter": {"file": adapter.name, "file_bytes": adapter.stat().st_size},
        "metrics": {"test_acc": 50.0}, "heart": {"mask": mask, "ne": 2} if mask else None,
        "data_root": str(folder / "data"),
    }
    path = sub / f"{run_id}.json"
    path.write_text(json.dumps(rec))
    return path


def fig5(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from heartbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["figure5", *argv])
    return code, out.getvalue(), err.getvalue()


def refused(tmp_path: Path, heart: Path, bilora: Path, *expect: str) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = fig5("--heart", str(heart), "--bilora", str(bilora), "--out", str(out))
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for text in expect:
        assert text in lines[0], lines[0]
    assert not out.exists()


@pytest.fixture
def fig5_pair(tmp_path):
    res = tmp_path / "res"
    return (fig5_record(res, "heart_lora", "h1", {"rank": 4, "ne": 2}),
            fig5_record(res, "bilora", "b1"))


def test_figure5_refuses_a_lora_record_as_heart(tmp_path, fig5_pair):
    lora = fig5_record(tmp_path / "res", "lora", "l1")
    refused(tmp_path, lora, fig5_pair[1], str(lora), "heart_lora", "ne > 0")


def test_figure5_refuses_a_heart_record_as_bilora(tmp_path, fig5_pair):
    heart, _ = fig5_pair
    other = fig5_record(tmp_path / "res", "heart_lora", "h2", {"rank": 4, "ne": 2})
    refused(tmp_path, heart, other, str(other), "expected a bilora record")


def test_figure5_refuses_heart_lora_without_masked_heads(tmp_path, fig5_pair):
    ne0 = fig5_record(tmp_path / "res", "heart_lora", "h0", {"rank": 4, "ne": 0})
    refused(tmp_path, ne0, fig5_pair[1], str(ne0), "ne = 0")


def test_figure5_refuses_records_of_different_backbones(tmp_path, fig5_pair):
    other = fig5_record(tmp_path / "res", "bilora", "b2", backbone="vit_test")
    refused(tmp_path, fig5_pair[0], other, "different backbones", "vit_test", "vit_mini")


def test_figure5_refuses_a_folder(tmp_path, fig5_pair):
    refused(tmp_path, fig5_pair[0].parent, fig5_pair[1], "is a folder")


def test_figure5_refuses_a_truncated_adapter(tmp_path, fig5_pair):
    heart, bilora = fig5_pair
    truncate(bilora.with_suffix(".safetensors"))
    refused(tmp_path, heart, bilora, str(bilora), "bytes")


def test_figure5_refuses_adapter_null(tmp_path, fig5_pair):
    heart, bilora = fig5_pair
    null_adapter(heart)
    refused(tmp_path, heart, bilora, str(heart), "adapter is null")


# ---------------------------------------------------------------------------
# Found by attacking the above (the closing note lists them)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, says", [
    ("seed", [0], "seed is [0]"),  # tables: TypeError unhashable
    ("seed", float("nan"), "seed is nan"),  # a NaN seed made its own one-seed block
    ("train", "fast", "train is not an object"),  # tables: ValueError
    ("group", 3, "group is 3"),  # tables: TypeError sorting int and str
    ("num_classes", "ten", "num_classes is 'ten'"),
    ("eval_protocol", {"a": 1}, "eval_protocol is {'a': 1}"),
    ("content", "x", "content is not an object"),
])
def test_mistyped_fields_are_skipped_by_name(tmp_path, key, value, says):
    from heartbench.results import load_records

    write_json(tmp_path, record(acc=50.0, seed=1))
    path = write_json(tmp_path, record(extra={key: value}))
    loaded = load_records(tmp_path)
    assert [(p, says in why) for p, why in loaded.skipped] == [(path, True)]
    stats.build_blocks(loaded.done)  # and what is left builds


def test_adapter_file_outside_the_record_folder_is_refused(copy_of):
    from heartbench.results import adapter_problem

    results, spec, record_file, adapter = copy_of
    rec = json.loads(record_file.read_text())
    rec["adapter"]["file"] = f"../{spec.suite}/{adapter.name}"
    assert "expected a file name beside the record" in adapter_problem(rec, record_file)


def test_old_record_catches_appended_bytes_and_a_swapped_adapter(copy_of, tmp_path):
    from heartbench.results import adapter_problem

    results, spec, record_file, adapter = copy_of
    make_old(record_file)
    rec = json.loads(record_file.read_text())
    adapter.write_bytes(adapter.read_bytes() + b"xx")
    assert "bytes appended" in adapter_problem(rec, record_file)
    # Another method's adapter of another size in its place (an old record has no hash):
    fig5_record(tmp_path / "other", "lora", "x1", {"rank": 2})
    adapter.write_bytes((tmp_path / "other" / "suite" / "x1.safetensors").read_bytes())
    assert "stored_bytes" in adapter_problem(rec, record_file)


def test_a_pack_whose_runs_diverge_stores_them_failed(tmp_path, synth_root, one_thread):
    """Two packed runs at lr 1e30: each stored failed with its reason (was: the failed
    record's update met the pack's wall_time_s twice and the job crashed)."""
    from heartbench.pack import execute_pack
    from heartbench.suite import load_suite

    path = plan(tmp_path, synth_root, lr="1e30", config="{ rank = 4 }\ngrid = { rank = [2, 4] }")
    specs = load_suite(path).runs
    assert len(specs) == 2
    records = execute_pack(specs, tmp_path / "res")
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all("diverged" in r["error"]["reason"] and r["packed"]["k"] == 2 for r in records)


def test_weights_hash_splits_rows_only_where_two_known_hashes_differ():
    """A seed stored before records had a content hash joins the seeds that have one (the
    twin adds seeds to such rows); two different known weights hashes are two rows."""
    old = record(seed=0, acc=40.0)
    new = [record(seed=s, acc=a, extra={"content": {"weights": "a" * 64, "data": "d1"}})
           for s, a in ((1, 50.0), (2, 60.0))]
    got = {k: v for k, v in cells([old, *new]).items() if k[0] == 1}
    assert got == {(1, "LoRA", "animals"): (50.0, 3)}
    other = record(seed=3, acc=90.0, extra={"content": {"weights": "b" * 64, "data": "d1"}})
    got = {k: v for k, v in cells([old, *new, other]).items() if k[0] == 1}
    assert (90.0, 1) in got.values() and not any(n == 4 for _, n in got.values())


def test_data_fingerprint_splits_configurations_only_where_known_and_different():
    from heartbench.report.select import select_cell

    a = [record(seed=s, acc=50.0 + s, extra={"content": {"data": "d1"}}) for s in (0, 1)]
    assert select_cell(a + [record(seed=2, acc=70.0)]).n == 3
    b = record(seed=2, acc=99.0, extra={"content": {"data": "d2"}})
    cell = select_cell(a + [b])
    assert cell.n_configs == 2  # never one three-seed mean of two data sets
    assert sorted(cell.by_seed.values()) in ([50.0, 51.0], [99.0])


def test_figure5_refuses_a_heart_lora_run_that_never_masked(tmp_path, fig5_pair):
    """The issue's mask_epoch 10 / epochs 3 record (stored done by older code): ne 3, mask
    None; its figure would frame no head."""
    heart, bilora = fig5_pair
    rec = json.loads(heart.read_text())
    rec["heart"]["mask"] = None
    heart.write_text(json.dumps(rec))
    refused(tmp_path, heart, bilora, str(heart), "heart.mask is null")
