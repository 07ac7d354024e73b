"""keep_adapter = false: a run's adapter file is deliberately not written and its record
says so (issue 25: the twins' Full fine-tuning adapters are read by no command)."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartbench.cli import main as cli
from heartbench.results import load_records

SUITE = """
[suite]
name = "keep"
benchmark = "synth"
data_root = "{data}"
seeds = [0]
tasks = ["colors"]

[backbone]
name = "vit_test"

[train]
epochs = 1
warmup_epochs = 0
batch_size = 16

[launcher]
jobs = 1

[[methods]]
name = "lora"
label = "LoRA"
config = {{ rank = 4 }}
{keep}
"""


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tasks=["colors"])
    return root


def _run(tmp_path: Path, data: Path, keep: str) -> tuple[dict, Path]:
    suite = tmp_path / f"keep{len(keep)}.toml"
    suite.write_text(SUITE.format(data=data, keep=keep))
    results = tmp_path / f"results{len(keep)}"
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results)]) == 0
    (record,) = load_records(results).records
    return record, results / "keep"


def test_keep_adapter_false_writes_no_adapter_and_says_so(tmp_path: Path, synth_root: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from safetensors import safe_open

    kept, kept_dir = _run(tmp_path, synth_root, "")
    dropped, dropped_dir = _run(tmp_path, synth_root, "keep_adapter = false")
    # Same run (keep_adapter is not part of the identity), same result.
    assert dropped["run_id"] == kept["run_id"]
    assert dropped["metrics"]["test_acc"] == kept["metrics"]["test_acc"]
    from heartbench.results import adapter_kept

    assert adapter_kept(kept) is True and adapter_kept(dropped) is False
    assert dropped["adapter"]["kept"] is False
    assert dropped["adapter"]["file"] is None
    assert not list(dropped_dir.glob("*.safetensors"))
    # The stored size is still the payload the file would have held (read from the kept file).
    with safe_open(str(kept_dir / kept["adapter"]["file"]), "pt") as f:
        payload = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                      for k in f.keys() if k.startswith("adapter."))
    assert dropped["adapter"]["stored_bytes"] == payload == kept["adapter"]["stored_bytes"]
    # A second run skips the done record rather than retraining it for the missing file.
    capsys.readouterr()
    suite = tmp_path / "keep20.toml"
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir",
                str(dropped_dir.parent)]) == 0
    (again,) = load_records(dropped_dir.parent).records
    assert again["created"] == dropped["created"] and again["wall_time_s"] == dropped["wall_time_s"]


def test_twin_full_fine_tuning_keeps_no_adapter() -> None:
    """Every twin suite's Full entry sets keep_adapter = false, and nothing else does."""
    from heartbench.suite import load_suite

    repo = Path(__file__).resolve().parent.parent
    for name in ("vtab_mini", "swin_mini"):
        runs = load_suite(repo / "suites" / f"{name}.toml").runs
        assert {r.method for r in runs if not r.keep_adapter} == {"full"}, name
        assert all(not r.keep_adapter for r in runs if r.method == "full"), name
