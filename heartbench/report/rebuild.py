"""``check``'s paper section, its work: the committed paper/ against a rebuild of the records
and baselines into a temporary folder (``tables``' own code), byte for byte, and the package
versions those bytes depend on."""

from __future__ import annotations

import difflib
import shutil
import tempfile
from pathlib import Path

# Python packages the bytes of paper/'s PDFs and PNGs depend on (pinned in constraints.txt).
BYTE_PACKAGES: tuple[str, ...] = ("matplotlib", "fonttools", "numpy", "seaborn", "pillow",
                                  "jinja2", "pandas", "contourpy")


def paper_differences(results_dir: Path, baselines: Path | None, paper: Path, tolerance: float
                      ) -> tuple[list[str], int, list[str]]:
    """(one line per differing, missing or extra file, files compared, files not rebuilt:
    Figure 5, which ``figure5`` draws by running the models)."""
    from heartbench.report import build

    outside = sorted(p.name for p in paper.glob("fig5_*"))
    with tempfile.TemporaryDirectory(prefix="heartbench-check-") as tmp:
        out = Path(tmp)
        for name in outside:  # preview.tex inputs Figure 5 when it is there
            shutil.copy2(paper / name, out / name)
        build.build(results_dir, out, baselines_dir=baselines, pdf="skip", tolerance=tolerance,
                    skip_invalid=True)
        rebuilt = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
        committed = {p.name for p in paper.iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.suffix not in (".aux", ".log") and p.name != "preview.pdf"}
        problems = []
        for name in sorted(committed | rebuilt):
            if name in outside:
                continue
            if name not in rebuilt:
                problems.append(f"{paper / name}: committed, but a rebuild does not write it")
            elif name not in committed:
                problems.append(f"{paper / name}: missing (a rebuild writes it)")
            elif (paper / name).read_bytes() != (out / name).read_bytes():
                problems.append(f"{paper / name}: differs from a rebuild: "
                                f"{first_difference(paper / name, out / name)}")
    return problems, len(rebuilt - set(outside)), outside


def first_difference(committed: Path, rebuilt: Path) -> str:
    """Where two files differ: the first differing line of a text file, else sizes."""
    if committed.suffix == ".tex":
        old = committed.read_text(encoding="utf-8").splitlines()
        new = rebuilt.read_text(encoding="utf-8").splitlines()
        for number, (a, b) in enumerate(zip(old + [""] * len(new), new + [""] * len(old)), 1):
            if a != b:
                cells_a, cells_b = a.split(" & "), b.split(" & ")
                cell = next((f" (cell {i + 1}: {x.strip()!r} committed, {y.strip()!r} rebuilt)"
                             for i, (x, y) in enumerate(zip(cells_a, cells_b)) if x != y), "")
                ratio = difflib.SequenceMatcher(None, a, b).ratio()
                return (f"line {number} differs{cell}" if cell and " & " in a and ratio > 0.5 else
                        f"line {number} differs: committed {a[:90]!r}, rebuilt {b[:90]!r}")
    return f"{committed.stat().st_size} bytes committed, {rebuilt.stat().st_size} rebuilt"


def package_drift(constraints: Path) -> list[str]:
    """Installed versions of BYTE_PACKAGES that differ from the pins in ``constraints``."""
    from importlib.metadata import PackageNotFoundError, version

    pins = {}
    path = Path(constraints)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, sep, pinned = line.split("#")[0].strip().partition("==")
            if sep:
                pins[name.strip().lower()] = pinned.strip()
    out = []
    for name in BYTE_PACKAGES:
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if name in pins and pins[name] != installed:
            out.append(f"{name} {installed} (constraints.txt pins {pins[name]})")
    return out
