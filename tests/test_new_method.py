"""``new-method`` writes a plugin skeleton whose own test passes as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

from heartbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_the_skeleton_passes_its_own_test(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    assert main(["new-method", "my_idea", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "my_idea.py", "my_idea_suite.toml", "test_my_idea.py"]
    suite = tomllib.loads((out / "my_idea_suite.toml").read_text())
    assert suite["suite"]["benchmark"] == "vtab_mini" and suite["suite"]["plugins"] == ["my_idea.py"]
    assert [m["name"] for m in suite["methods"]] == ["my_idea", "lora", "bilora"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_my_idea.py"], cwd=out, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_it_never_overwrites_and_refuses_taken_names(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "my_idea.py").write_text("# mine, keep\n")
    assert main(["new-method", "my_idea", "--out", str(out)]) == 2
    assert "my_idea.py already exists" in capsys.readouterr().err
    assert (out / "my_idea.py").read_text() == "# mine, keep\n"
    assert sorted(p.name for p in out.iterdir()) == ["my_idea.py"]
    assert main(["new-method", "bilora", "--out", str(tmp_path / "x")]) == 2
    assert main(["new-method", "Not-A-Name", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
