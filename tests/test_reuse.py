"""A done record is reused, not retrained, when another suite plans the same run id (issue
25 item 4): `run` copies it into its own suite's folder, self-describing, and `status` says
where it came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from heartbench.cli import main as cli
from heartbench.results import load_records

SUITE = """
[suite]
name = "{name}"
benchmark = "synth"
data_root = "{data}"
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = 2
warmup_epochs = 1
batch_size = 16
max_train_batches = 2

[[methods]]
name = "lora"
label = "{label}"
config = {{ rank = 4 }}
tasks = ["colors"]
{extra}
"""

# The second suite plans the first's run again (under another label) and one of its own.
EXTRA = """
[[methods]]
name = "lora"
label = "LoRA r2"
config = { rank = 2 }
tasks = ["colors"]
"""


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tasks=["colors"])
    return root


def suite(tmp_path: Path, data: Path, name: str, label: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SUITE.format(name=name, data=data, label=label, extra=extra))
    return path


def run(path: Path, results: Path) -> int:
    return cli(["run", str(path), "--executor", "debug", "--results-dir", str(results)])


def trained(err: str) -> list[str]:
    """Run ids that ``heartbench.train.execute`` logged as trained."""
    return [line.split()[2].rstrip(":") for line in err.splitlines() if ": training " in line]


def test_a_run_done_by_another_suite_is_copied_not_retrained(
        tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heartbench.suite import load_suite

    results = tmp_path / "results"
    first = suite(tmp_path, synth_root, "first", "LoRA")
    assert run(first, results) == 0
    (shared,) = [r.run_id for r in load_suite(first).runs]
    second = suite(tmp_path, synth_root, "second", "LoRA again", EXTRA)
    own = [r.run_id for r in load_suite(second).runs if r.run_id != shared]
    assert len(own) == 1 and shared in {r.run_id for r in load_suite(second).runs}
    capsys.readouterr()

    assert run(second, results) == 0
    out, err = capsys.readouterr()
    assert trained(err) == own, err  # only its own run trained
    assert "1 reused from first" in out, out
    source = json.loads((results / "first" / f"{shared}.json").read_text())
    copy = json.loads((results / "second" / f"{shared}.json").read_text())
    # This suite's record, saying where it came from; the result itself unchanged.
    assert copy["suite"] == "second" and copy["label"] == "LoRA again"
    assert copy["reused_from"] == {"suite": "first", "record": f"first/{shared}.json",
                                   "label": "LoRA"}
    same = {k: v for k, v in source.items() if k not in ("suite", "label", "grid")}
    assert {k: copy[k] for k in same} == same
    adapter = copy["adapter"]["file"]
    assert (results / "second" / adapter).read_bytes() == (results / "first" / adapter).read_bytes()

    capsys.readouterr()
    assert cli(["status", str(second), "--results-dir", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(shared) and line.endswith("done (from first)") for line in lines)
    assert any(line.startswith(own[0]) and line.endswith(" done") for line in lines), lines

    # Self-describing: with the source suite gone, the copy is still a whole record.
    shutil.rmtree(results / "first")
    capsys.readouterr()
    assert run(second, results) == 0
    out, err = capsys.readouterr()
    assert trained(err) == [] and "2 already done" in out, out
    (record,) = [r for r in load_records(results).records if r["run_id"] == shared]
    assert record["suite"] == "second" and (results / "second" / adapter).is_file()


def test_only_a_done_record_from_the_same_data_is_reused(tmp_path: Path, synth_root: Path
                                                         ) -> None:
    """A failed record, or a done one from other data, of the same run id is no result for
    this suite: nothing is copied."""
    from heartbench.content import with_content
    from heartbench.runs import reuse_done
    from heartbench.suite import load_suite
    from heartbench.train import base_record

    results = tmp_path / "results"
    path = suite(tmp_path, synth_root, "second", "LoRA")
    loaded = load_suite(path)
    (spec,) = with_content(loaded, loaded.runs)
    folder = results / "first"
    folder.mkdir(parents=True)
    record = {**base_record(spec), "status": "done", "suite": "first",
              "metrics": {"test_acc": 50.0},
              # no adapter to verify: said deliberately not kept (suite keep_adapter = false)
              "adapter": {"file": None, "kept": False},
              "content": {**spec.content, "data": "0" * 16}}  # trained on other data
    (folder / f"{spec.run_id}.json").write_text(json.dumps(record))
    assert reuse_done(results, [spec]) == {}
    record["content"], record["status"] = spec.content, "failed"
    (folder / f"{spec.run_id}.json").write_text(json.dumps(record))
    assert reuse_done(results, [spec]) == {}
    assert not (results / "second" / f"{spec.run_id}.json").exists()
    record["status"] = "done"  # the control: the same record done from this data is reused
    (folder / f"{spec.run_id}.json").write_text(json.dumps(record))
    assert reuse_done(results, [spec]) == {spec.run_id: "first"}
