"""docs/your-method.md: every command on the page, run in order in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "your-method.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_its_commands() -> None:
    blocks = bash_blocks(PAGE.read_text())
    script = "\n".join(blocks)
    for command in ("new-method", "pytest", "methods", "run", "status", "tables",
                    "data verify"):
        assert command in script


@pytest.mark.slow
def test_every_command_on_the_page_runs(tmp_path: Path) -> None:
    """Three twin runs (one epoch of 4 batches each) and the rest: minutes on 2 cores."""
    script = "set -euo pipefail\n" + "\n".join(bash_blocks(PAGE.read_text()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    folder = tmp_path / "my-method"
    records = list((folder / "results" / "my_lora").glob("*.json"))
    assert len(records) == 3
    # the measured row, grepped from the table (its budget mark: one configuration, [1])
    assert re.search(r"^MyLora \{\\scriptsize \[1\]\} & ", out, flags=re.M)
    assert "plugin source changed" in out
    assert "my_colors" in out
