"""Run records on disk: atomic writes, no clobbering, and a loader that never loses a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from heartbench import results
from heartbench.errors import UserError
from heartbench.results import load_records, record_path, write_record


def make_record(run_id: str = "0123456789abcdef", **overrides) -> dict:
    record = {
        "schema": 1, "run_id": run_id, "status": "done", "suite": "vtab_mini",
        "benchmark": "vtab_mini", "task": "mnist", "group": "natural", "shots": None,
        "method": "heart_lora", "label": "Heart-LoRA",
        "method_config": {"rank": 32, "scale": 10.0, "bits": 1, "ne": 3},
        "grid": {"scale": 10.0, "ne": 3},
        "backbone": {"name": "vit_mini", "weights": None, "kwargs": {}},
        "train": {"epochs": 10}, "seed": 0, "eval_protocol": "last",
        "metrics": {"test_acc": 72.31, "val_acc": None, "history": []},
        "heart": None,
        "adapter": {"stored_bytes": 147840, "head_bytes": 92160, "trainable_params": 1474560,
                    "file": f"{run_id}.safetensors"},
        "wall_time_s": 1.0, "device": "cpu", "created": "2026-11-24T10:00:00+00:00",
        "versions": {}, "git_commit": None,
    }
    record.update(overrides)
    return record


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_record_path_layout(tmp_path):
    assert record_path(tmp_path, "vtab1k", "3f2a9c1d0b7e4a55") == tmp_path / "vtab1k" / "3f2a9c1d0b7e4a55.json"
    for bad_suite in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(UserError, match="suite"):
            record_path(tmp_path, bad_suite, "3f2a9c1d0b7e4a55")
    with pytest.raises(UserError, match="run_id"):
        record_path(tmp_path, "vtab1k", "../../etc/passwd")


def test_write_then_load_round_trip(tmp_path):
    record = make_record()
    path = write_record(tmp_path, record)
    assert path == tmp_path / "vtab_mini" / "0123456789abcdef.json"
    assert json.loads(path.read_text()) == record
    assert files(tmp_path) == ["vtab_mini/0123456789abcdef.json"]  # no temporary left
    loaded = load_records(tmp_path)
    assert loaded.records == [record] and loaded.skipped == []
    row = loaded.frame.iloc[0]
    assert (row.run_id, row.task, row.label, row.seed, row.test_acc) == (
        "0123456789abcdef", "mnist", "Heart-LoRA", 0, 72.31)
    assert row.stored_bytes == 147840 and row.trainable_params == 1474560
    assert row["grid.scale"] == 10.0 and row["grid.ne"] == 3
    assert row.grid == {"scale": 10.0, "ne": 3} and row.method_config["bits"] == 1
    for column in results.FRAME_COLUMNS:
        assert column in loaded.frame.columns


def test_numpy_values_are_written_as_plain_json(tmp_path):
    np = pytest.importorskip("numpy")
    record = make_record(metrics={"test_acc": np.float64(71.5), "val_acc": None,
                                  "history": np.arange(3)})
    path = write_record(tmp_path, record)
    assert json.loads(path.read_text())["metrics"] == {"test_acc": 71.5, "val_acc": None,
                                                       "history": [0, 1, 2]}


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_record(tmp_path, make_record())
    with pytest.raises(FileExistsError, match="0123456789abcdef.json"):
        write_record(tmp_path, make_record(metrics={"test_acc": 1.0, "val_acc": None}))
    assert json.loads(path.read_text())["metrics"]["test_acc"] == 72.31
    write_record(tmp_path, make_record(metrics={"test_acc": 1.0, "val_acc": None}), overwrite=True)
    assert json.loads(path.read_text())["metrics"]["test_acc"] == 1.0
    assert files(tmp_path) == ["vtab_mini/0123456789abcdef.json"]


def test_unwritable_results_dir_is_one_line_user_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(UserError) as err:
        write_record(blocker, make_record())
    message = str(err.value)
    assert str(blocker) in message and "not writable" in message and "\n" not in message


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(5, "disk on fire")

    monkeypatch.setattr(results.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        write_record(tmp_path, make_record())
    assert files(tmp_path) == []


def test_failed_overwrite_keeps_the_old_record_whole(tmp_path, monkeypatch):
    path = write_record(tmp_path, make_record())
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "no space left")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="no space"):
        write_record(tmp_path, make_record(metrics={"test_acc": 5.0, "val_acc": None}),
                     overwrite=True)
    assert path.read_bytes() == before
    assert files(tmp_path) == ["vtab_mini/0123456789abcdef.json"]


def test_unserialisable_record_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_record(tmp_path, make_record(extra=object()))
    assert files(tmp_path) == []


def test_write_is_atomic_at_every_moment(tmp_path, monkeypatch):
    """Whatever a concurrent reader sees under the final name is a complete record."""
    seen = []
    real_link = os.link

    def spying_link(src, dst):
        seen.append(Path(src).read_text())  # the temporary file is complete before publishing
        assert not Path(dst).exists()
        return real_link(src, dst)

    monkeypatch.setattr(results.os, "link", spying_link)
    path = write_record(tmp_path, make_record())
    assert json.loads(seen[0]) == make_record()
    assert path.read_text() == seen[0]


def test_loader_skips_bad_files_by_name_and_leaves_them(tmp_path):
    good = write_record(tmp_path, make_record())
    suite = tmp_path / "vtab_mini"
    truncated = suite / "aaaaaaaaaaaaaaaa.json"
    truncated.write_text(good.read_text()[:57])
    missing = suite / "bbbbbbbbbbbbbbbb.json"
    record = make_record("bbbbbbbbbbbbbbbb")
    del record["label"]
    missing.write_text(json.dumps(record))
    renamed = suite / "cccccccccccccccc.json"
    renamed.write_text(json.dumps(make_record("dddddddddddddddd")))
    unknown = suite / "notes.txt"
    unknown.write_text("hello")
    leftover = suite / ".0123456789abcdef.x1y2.tmp"
    leftover.write_text("{")
    not_object = tmp_path / "other" / "eeeeeeeeeeeeeeee.json"
    not_object.parent.mkdir()
    not_object.write_text("[1, 2]")
    companions = [suite / "0123456789abcdef.safetensors", suite / "0123456789abcdef.final.ckpt",
                  suite / "0123456789abcdef.lock", suite / "0123456789abcdef.claim",
                  suite / "0123456789abcdef.final.ckpt.prev",
                  suite / "0123456789abcdef.final.ckpt.epoch",  # an interrupted run's progress
                  suite / "0123456789abcdef.final.ckpt.epoch.tmp",
                  tmp_path / ".gitkeep"]
    for path in companions:
        path.write_bytes(b"\x00binary")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    loaded = load_records(tmp_path)

    assert [r["run_id"] for r in loaded.records] == ["0123456789abcdef"]
    reasons = {path.name: reason for path, reason in loaded.skipped}
    assert set(reasons) == {truncated.name, missing.name, renamed.name, unknown.name,
                            leftover.name, not_object.name}
    assert "truncated" in reasons[truncated.name]
    assert "label" in reasons[missing.name]
    assert "does not match the file name" in reasons[renamed.name]
    assert "unknown file" in reasons[unknown.name]
    assert "unfinished write" in reasons[leftover.name]
    assert "not a JSON object" in reasons[not_object.name]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing deleted, nothing changed


def test_same_run_in_two_suites_is_kept_in_both(tmp_path):
    write_record(tmp_path, make_record())
    write_record(tmp_path, make_record(suite="fp32", label="Heart-LoRA (1 bit)"))
    loaded = load_records(tmp_path)
    assert sorted(loaded.frame.suite) == ["fp32", "vtab_mini"] and loaded.skipped == []


def test_only_done_records_count(tmp_path):
    write_record(tmp_path, make_record())
    write_record(tmp_path, make_record(
        "1111111111111111", status="failed", error={"epoch": 3, "reason": "NaN loss"},
        metrics={"test_acc": None, "val_acc": None, "history": []}))
    loaded = load_records(tmp_path)
    assert len(loaded.records) == 2
    assert [r["run_id"] for r in loaded.done] == ["0123456789abcdef"]
    assert sorted(loaded.frame.status) == ["done", "failed"]


def test_invalid_values_are_skipped_not_crashed(tmp_path):
    suite = tmp_path / "s"
    suite.mkdir()
    (suite / "aaaaaaaaaaaaaaaa.json").write_text(json.dumps(make_record("aaaaaaaaaaaaaaaa", schema=2)))
    (suite / "bbbbbbbbbbbbbbbb.json").write_text(json.dumps(make_record("bbbbbbbbbbbbbbbb", status="odd")))
    (suite / "cccccccccccccccc.json").write_text(json.dumps(make_record("cccccccccccccccc", metrics=3)))
    (suite / "dddddddddddddddd.json").write_bytes(b"\xff\xfe\x00")
    loaded = load_records(tmp_path)
    assert loaded.records == [] and len(loaded.skipped) == 4
    assert len(loaded.frame) == 0 and "test_acc" in loaded.frame.columns


def test_missing_results_dir_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_records(tmp_path / "nope")
