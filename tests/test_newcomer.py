"""A newcomer's first hour (issue 27): `run` names every problem at once, one command
grammar, a bench verdict, `data verify` on a copy that is not VTAB-1K, "in no table" lines
that say why, and the docs site building strictly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heartbench.cli import main as cli

REPO = Path(__file__).resolve().parent.parent
PREFIX = "heartbench run: error: "

# A suite with four problems at once: no data, no weights, a results folder under a file,
# and CUDA asked for on a machine without it (the local executor trains here).
FOUR_PROBLEMS = """
[suite]
name = "four"
benchmark = "vtab1k"
data_root = "{data}"
tasks = ["kitti", "dtd"]
seeds = [0]

[backbone]
name = "vit_test"
weights = "{weights}"

[train]
epochs = 1
warmup_epochs = 0
batch_size = 16
device = "cuda"

[launcher]
executor = "local"

[[methods]]
name = "lora"
label = "LoRA"
"""


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def four_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """The suite, and the command line whose results folder lies under a plain file."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    weights = tmp_path / "weights" / "ViT-B_16.npz"
    (tmp_path / "a-file").write_text("not a folder")
    suite = tmp_path / "four.toml"
    suite.write_text(FOUR_PROBLEMS.format(data=tmp_path / "vtab-1k", weights=weights))
    return suite, ["run", str(suite), "--results-dir", str(tmp_path / "a-file" / "results")]


@pytest.mark.parametrize("dry_run", [False, True])
def test_run_names_every_problem_of_a_suite_at_once(
        tmp_path: Path, four_problems: tuple[Path, list[str]], dry_run: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Data, weights, results folder and device: one line each with its remedy, a closing
    count, exit 2, nothing written; the same with --dry-run (after the plan)."""
    suite, args = four_problems
    before = snapshot(tmp_path)
    code = cli(args + (["--dry-run"] if dry_run else []))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (out, err)
    assert all(line.startswith(PREFIX) for line in lines), err
    expected = {  # each problem: fragments its line must hold
        "data": [str(tmp_path / "vtab-1k"), "data prepare vtab1k", "--tasks dtd,kitti"],
        "weights": [str(tmp_path / "weights" / "ViT-B_16.npz"),
                    "gs://vit_models/imagenet21k/ViT-B_16.npz", 'weights = "timm"'],
        "results": [str(tmp_path / "a-file" / "results"), "not writable"],
        "device": ["train.device = 'cuda'", "no CUDA device"],
    }
    assert len(lines) == len(expected) + 1, err
    for (what, fragments), line in zip(expected.items(), lines, strict=False):
        for fragment in fragments:
            assert fragment in line, (what, fragment, line)
    assert lines[-1].startswith(f"{PREFIX}{len(expected)} problems"), lines[-1]
    assert ("plan: 2 runs" in out) == dry_run
    assert snapshot(tmp_path) == before


def test_run_names_each_missing_and_each_broken_task(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under an existing root: the tasks without data in one line with the command that
    makes them, and a task whose list is broken in its own line."""
    from heartbench.data.rehearsal import write_fullsize

    root = tmp_path / "vtab-1k"
    write_fullsize(root, ["kitti"], size=8, max_test=None)
    listing = root / "kitti" / "test.txt"
    listing.write_text("".join(listing.read_text().splitlines(keepends=True)[:-1]))
    suite = tmp_path / "s.toml"
    suite.write_text(FOUR_PROBLEMS.replace('["kitti", "dtd"]', '["kitti", "dtd", "eurosat"]')
                     .replace('weights = "{weights}"\n', "").replace('device = "cuda"\n', "")
                     .format(data=root))
    assert cli(["run", str(suite), "--results-dir", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert "2 tasks have no data under" in lines[0] and "dtd, eurosat" in lines[0]
    assert "--tasks dtd,eurosat" in lines[0]
    assert "kitti" in lines[1] and "test" in lines[1] and "expected" in lines[1]
    assert lines[2].startswith(f"{PREFIX}2 problems (data)")
    assert not (tmp_path / "r").exists()


def test_dry_run_announces_missing_twin_data_and_writes_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "synth"
    assert cli(["run", str(REPO / "suites" / "smoke.toml"), "--dry-run", "--data-root",
                str(root), "--only", "colors"]) == 0
    out = capsys.readouterr().out
    assert f"tasks colors are not in {root} yet" in out and not root.exists()
    assert out.strip().splitlines()[-1].startswith("plan: ")


def test_known_weights_say_where_they_are_published() -> None:
    """Every checkpoint a shipped suite names has a remedy naming where it comes from."""
    import tomllib

    from heartbench.preflight import KNOWN_WEIGHTS, weights_remedy

    named = set()
    for path in (REPO / "suites").glob("*.toml"):
        weights = tomllib.loads(path.read_text())["backbone"].get("weights")
        if weights not in (None, "timm"):
            named.add(Path(weights).name)
    assert named and named <= set(KNOWN_WEIGHTS), named - set(KNOWN_WEIGHTS)
    assert "storage.googleapis.com/vit_models" in weights_remedy(Path("w/ViT-B_16.npz"))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
