"""Identity that follows content: records store the data fingerprint and the weights hash.

A corrected copy of the data at the same path reruns; the same copy moved elsewhere is
still done; records written before the content was stored stay valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heartbench.cli import main as cli
from heartbench.content import file_sha256, stale_reason
from heartbench.data.fingerprint import task_fingerprint
from heartbench.suite import load_suite

SUITE = """
[suite]
name = "ident"
benchmark = "synth"
data_root = "{data}"
tasks = ["colors"]
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = 1
warmup_epochs = 0
batch_size = 16
max_train_batches = 1

[[methods]]
name = "lora"
config = {{ rank = 2 }}
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTBENCH_CACHE", str(tmp_path / "cache"))


def test_file_hash_is_sha256_and_cached_by_path_size_mtime(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    path.write_bytes(os.urandom(5000))
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    cache_file = tmp_path / "cache" / "file-sha256.json"
    cache = json.loads(cache_file.read_text())
    cache[str(path.resolve())]["sha256"] = "cached"  # proves the second call reads the cache
    cache_file.write_text(json.dumps(cache))
    assert file_sha256(path) == "cached"
    path.write_bytes(os.urandom(5001))  # new size (and mtime): hashed again
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


class _Run:
    task = "colors"

    def __init__(self, content: dict) -> None:
        self.content = content


def test_stale_reason_compares_only_known_values() -> None:
    assert stale_reason({"status": "done"}, _Run({"data": "a", "weights": "w"})) is None
    assert stale_reason({"content": None}, _Run({"data": "a"})) is None
    assert stale_reason({"content": {"data": "a", "weights": None}},
                        _Run({"data": "a", "weights": "w"})) is None
    assert "data of task colors changed" in stale_reason(
        {"content": {"data": "a"}}, _Run({"data": "b"}))
    assert "weights file changed" in stale_reason(
        {"content": {"data": "a", "weights": "w1"}}, _Run({"data": "a", "weights": "w2"}))
    assert stale_reason({"content": {"data": "a"}}, _Run({})) is None


def _run(suite: Path, results: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results),
                "--data-root", str(data)])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_corrected_copy_reruns_moved_copy_does_not(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from heartbench.data.synth import write_synth

    data = tmp_path / "data"
    write_synth(data, tasks=["colors"])
    suite = tmp_path / "ident.toml"
    suite.write_text(SUITE.format(data=data))
    results = tmp_path / "results"
    run_id = load_suite(suite).runs[0].run_id

    out = _run(suite, results, data, capsys)
    assert "0 already done, 1 to run" in out
    record_file = results / "ident" / f"{run_id}.json"
    record = json.loads(record_file.read_text())
    assert record["status"] == "done"
    assert record["content"] == {"data": task_fingerprint(data, "synth", "colors"),
                                 "weights": None}

    moved = tmp_path / "moved"
    shutil.move(data, moved)  # the same copy at another path: the run is still done
    assert "1 already done, 0 to run" in _run(suite, results, moved, capsys)

    # A corrected image at the same path: other content, so the run is repeated.
    image = moved / "colors" / "images" / "test" / "000005.jpg"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(image)
    # `status` says so before `run` does it (it said "done" while run would rerun it).
    assert cli(["status", str(suite), "--results-dir", str(results), "--data-root",
                str(moved)]) == 0
    status = capsys.readouterr().out
    assert re.search(rf"(?m)^{run_id}\s+colors\s+lora\s+stale  the data of task colors"
                     " changed since it ran", status), status
    assert status.rstrip().endswith("ident: 1 runs: 1 stale")
    out = _run(suite, results, moved, capsys)
    assert "0 already done, 1 to run" in out
    assert f"{run_id} (colors, lora): the data of task colors changed since it ran" in out
    again = json.loads(record_file.read_text())
    assert again["content"]["data"] == task_fingerprint(moved, "synth", "colors")
    assert again["content"]["data"] != record["content"]["data"]
    assert "1 already done, 0 to run" in _run(suite, results, moved, capsys)

    # A record from before content was stored stays done.
    del again["content"]
    record_file.write_text(json.dumps(again))
    image.unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert "1 already done, 0 to run" in _run(suite, results, moved, capsys)


def test_with_content_hashes_the_weights_file_once_per_launch(tmp_path: Path) -> None:
    import types

    from heartbench.content import with_content
    from heartbench.data.synth import write_synth

    write_synth(tmp_path / "d", tasks=["colors", "stripes"])
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not really weights")
    suite = types.SimpleNamespace(backbone={"weights": str(weights)}, benchmark="synth",
                                  data_root=str(tmp_path / "d"))
    runs = [r for r in load_suite_runs(tmp_path)]
    out = with_content(suite, runs)
    sha = hashlib.sha256(b"not really weights").hexdigest()
    assert [r.content for r in out] == [
        {"data": task_fingerprint(tmp_path / "d", "synth", r.task), "weights": sha} for r in runs]
    assert out[0].run_id == runs[0].run_id  # the content is not part of run_id


def load_suite_runs(tmp_path: Path) -> list:
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(data=tmp_path / "d").replace('tasks = ["colors"]',
                                                               'tasks = ["colors", "stripes"]'))
    return load_suite(path).runs
