"""The package's layering: the run bookkeeping (heartbench.runs) sits below launch, pack and
status, and no module grows past what one reader holds in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import heartbench

PACKAGE = Path(heartbench.__file__).parent
MAX_LINES = 600


def imported(module: str) -> set[str]:
    """Every heartbench module ``module`` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module.replace('.', '/')}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n.removeprefix("heartbench.") for n in names if n.startswith("heartbench.")}


def test_runs_is_below_launch_pack_and_status() -> None:
    assert imported("runs").isdisjoint({"launch", "pack", "status"}), imported("runs")
    for module in ("pack", "status"):
        assert "launch" not in imported(module), f"{module} imports launch"
    # The bookkeeping the three share is found in runs, not beside launch.
    for name in ("Claim", "claim_holder", "is_done", "read_record", "select"):
        assert name in vars(__import__("heartbench.runs", fromlist=[name])), name


def test_no_module_is_over_600_lines() -> None:
    lengths = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines())
               for p in PACKAGE.rglob("*.py")}
    assert lengths, "no modules found"
    over = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
