"""``python -m heartbench tables``: rebuild the paper's tables and figures into ``paper/``
(or ``--out DIR``).

Writes ``table<n>.tex`` (reported rows and measured VTAB-1K rows), ``table<n>_<benchmark>.tex``
(measured rows of a twin benchmark), ``table<n>_diff.tex`` (measured minus reported),
``fig<n>_<benchmark>.{pdf,png,tex}`` (the .tex holds the figure and its caption) and
``preview.tex``, which inputs them all; compiles
``preview.pdf`` when pdflatex is installed. The rules that place records in tables are in
:mod:`heartbench.report.tables`, the figures' in :mod:`heartbench.report.figures`.

Only the benchmarks in ``--benchmarks`` are shown (default :data:`DEFAULT_BENCHMARKS`: the
paper's and the CPU twins), so throwaway smoke results (benchmark synth) never add files to
paper/ or rewrite its tracked files unless asked for.

Output is deterministic: a rebuild from the same records gives byte-identical files (no
dates; everything sorted). Files that an earlier build wrote and this one does not (a
figure whose records were removed) are deleted, and only those: the list of generated
files is kept in ``<out>/.heartbench-generated``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from heartbench.errors import UserError

MANIFEST = ".heartbench-generated"
SOURCES = ("reported", "measured", "both")
PDF_MODES = ("auto", "require", "skip")
# Built by default: the paper's benchmarks and the CPU twins that stand in for them. Throwaway
# benchmarks (synth: the smoke suite) never change paper/ unless asked for by name.
DEFAULT_BENCHMARKS: tuple[str, ...] = ("vtab1k", "fewshot", "vtab_mini", "fewshot_mini")
TEX_PACKAGES_HINT = "apt-get install texlive-latex-base texlive-latex-recommended"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", default="results", type=Path,
                        help="folder of run records (default: results)")
    parser.add_argument("--out", default="paper", type=Path, metavar="DIR",
                        help="folder to write the tables, figures, preview.tex and preview.pdf"
                             " into (default: paper/, the committed tables: a build there"
                             " replaces them; give another folder to leave paper/ alone)")
    parser.add_argument("--source", choices=SOURCES, default="both",
                        help="rows from the paper (reported), from records (measured) or both")
    parser.add_argument("--baselines", type=Path, default=None,
                        help="folder of the paper's numbers (default: baselines/ of the checkout)")
    parser.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS),
                        help="comma-separated benchmarks whose records are shown, or 'all' "
                             f"(default: {','.join(DEFAULT_BENCHMARKS)}; synth, the smoke "
                             "suite's, only when named)")
    parser.add_argument("--no-figures", action="store_true", help="write tables only")
    parser.add_argument("--pdf", choices=PDF_MODES, default="auto",
                        help="compile preview.pdf: auto (if pdflatex exists), require "
                             "(fail without pdflatex), skip")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="points beyond which a measured-minus-reported cell is bold (default 1.0)")
    parser.add_argument("--skip-invalid", "--skip-unreadable", dest="skip_invalid",
                        action="store_true",
                        help="build without the record files that cannot be read or used (named,"
                             " one line each); without it such a file writes nothing and exits 1"
                             " (a left-out record could move rows silently)")


@dataclass
class BuildResult:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    pdf: Path | None = None
    pdf_error: str | None = None
    refused: bool = False  # unusable record files and not skip_invalid: nothing written


def _write(path: Path, text: str) -> None:
    """Write only when the content changed (keeps mtimes, and make-style tools, quiet)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build(results_dir: Path, out: Path, source: str = "both", baselines_dir: Path | None = None,
          figures: bool = True, pdf: str = "auto", tolerance: float = 1.0,
          benchmarks: tuple[str, ...] | None = DEFAULT_BENCHMARKS,
          skip_invalid: bool = True) -> BuildResult:
    """Write every table and figure the records and baselines allow; see the module docstring.

    Record files that cannot be used (unreadable, or values no table may show: a NaN or
    out-of-range accuracy, :func:`heartbench.results.validate_record`) are named in
    ``messages``; without ``skip_invalid`` nothing is written then (``refused``)."""
    from heartbench.report import latex, reference, select, tables
    from heartbench.results import RecordSet, load_records

    if source not in SOURCES:
        raise UserError(f"source {source!r} is not one of: {', '.join(SOURCES)}")
    result = BuildResult()
    try:
        reported = reference.load_reported(baselines_dir)
    except UserError:
        if source != "measured":
            raise
        reported = None  # only orders the measured rows as the paper does
    recordset = load_records(results_dir) if source != "reported" else RecordSet()
    records = recordset.done
    if benchmarks is not None:
        left = sorted({r["benchmark"] for r in records if r["benchmark"] not in benchmarks})
        if left:
            result.messages.append(f"not shown: records of benchmark(s) {', '.join(left)} "
                                   "(add them with --benchmarks, or --benchmarks all)")
        records = [r for r in records if r["benchmark"] in benchmarks]
    for path, reason in recordset.skipped:
        result.messages.append(f"{'skipped' if skip_invalid else 'unusable'} {path}: {reason}")
    if recordset.skipped and not skip_invalid:
        result.refused = True
        return result
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"output directory {out} cannot be created ({err.strerror})") from None

    for line in select.unplaced(records, str(results_dir)):
        result.messages.append(f"in no table: {line}")
    from heartbench.report.stats import rows_without_common_seed

    for line in rows_without_common_seed(records):
        result.messages.append(f"not shown: {line}")

    generated: list[str] = []
    models = tables.table_models(records, reported, source=source, tolerance=tolerance)
    if source != "reported":
        from heartbench.report.paired import table_models as paired_tables
        from heartbench.report.stability import table_models as stability_tables

        models += stability_tables(records) + paired_tables(records)
    for model in models:
        _write(out / f"{model.name}.tex", latex.render(model))
        generated.append(f"{model.name}.tex")

    made = []
    if figures and source != "reported":
        from heartbench.report.figures import build_figures

        made, skipped = build_figures(records, out)
        result.messages.extend(skipped)
        for fig in made:
            _write(out / f"{fig.stem}.tex",
                   latex.environment().get_template("figure.tex.j2").render(fig=fig))
            generated += [f"{fig.stem}.pdf", f"{fig.stem}.png", f"{fig.stem}.tex"]

    failed = sum(1 for r in recordset.records if r["status"] != "done")
    intro = (f"Source: {source}. Records: {len(records)} done"
             f"{f', {failed} failed (not shown)' if failed else ''} under "
             f"{latex.tex(Path(results_dir).name + '/')}; {len(recordset.skipped)} file(s) skipped."
             if source != "reported" else "Source: reported (the paper's numbers only).")
    # Figure 5 comes from its own command (it runs the models); include it when it is there.
    from heartbench.report.figures import Figure

    outside = [Figure(p.stem, "") for p in sorted(out.glob("fig5_*.tex")) if figures]
    shown = sorted([*made, *outside], key=lambda f: f.stem)
    preview = latex.environment().get_template("preview.tex.j2").render(
        intro=intro, tables=models, figures=shown)
    _write(out / "preview.tex", preview)
    generated.append("preview.tex")

    result.removed = _prune(out, generated)
    _write(out / MANIFEST, "".join(f"{name}\n" for name in sorted(generated)))
    result.written = [out / name for name in sorted(generated)]

    if pdf != "skip":
        _compile(out, pdf, result)
    return result


def _prune(out: Path, generated: list[str]) -> list[Path]:
    """Delete files the previous build generated that this one did not."""
    manifest = out / MANIFEST
    if not manifest.exists():
        return []
    removed = []
    for name in manifest.read_text(encoding="utf-8").split():
        path = out / name
        # Only plain names this module writes: a hand-edited manifest cannot reach elsewhere.
        if name not in generated and "/" not in name and not name.startswith(".") and path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def _compile(out: Path, mode: str, result: BuildResult) -> None:
    exe = shutil.which("pdflatex")
    if exe is None:
        message = f"pdflatex not found: {out / 'preview.pdf'} not built ({TEX_PACKAGES_HINT})"
        if mode == "require":
            result.pdf_error = message
        else:
            result.messages.append(message)
        return
    # Fixed dates make the PDF reproducible too. pdflatex writes its .aux and .log into a
    # temporary folder that is removed afterwards: only preview.pdf lands in ``out`` (and, when
    # it fails, preview.log, which the error names). Not a hidden folder inside ``out``: TeX's
    # default openout_any = p refuses to write into a path with a dot-component.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    work = Path(tempfile.mkdtemp(prefix="heartbench-pdflatex-"))
    try:
        _run_pdflatex(exe, out, work, env, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_pdflatex(exe: str, out: Path, work: Path, env: dict[str, str],
                  result: BuildResult) -> None:
    try:
        proc = subprocess.run(
            [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
             f"-output-directory={work}", "preview.tex"],
            cwd=out, env=env, capture_output=True, text=True, timeout=300, errors="replace")
    except subprocess.TimeoutExpired:
        result.pdf_error = f"pdflatex timed out on {out / 'preview.tex'}"
        return
    if proc.returncode != 0 or not (work / "preview.pdf").is_file():
        errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
        if (work / "preview.log").is_file():
            os.replace(work / "preview.log", out / "preview.log")
        result.pdf_error = (f"pdflatex failed on {out / 'preview.tex'}: "
                            f"{errors[0] if errors else 'exit code ' + str(proc.returncode)} "
                            f"(see {out / 'preview.log'})")
        return
    os.replace(work / "preview.pdf", out / "preview.pdf")
    result.pdf = out / "preview.pdf"


def main(args: argparse.Namespace) -> int:
    from heartbench.options import benchmark_name

    names = tuple(benchmark_name(b.strip()) for b in args.benchmarks.split(",") if b.strip())
    print(f"tables: reading the records under {args.results_dir}, writing"
          f" {'tables' if args.no_figures else 'tables and figures'} to {args.out}", flush=True)
    result = build(args.results_dir, args.out, source=args.source, baselines_dir=args.baselines,
                   figures=not args.no_figures, pdf=args.pdf, tolerance=args.tolerance,
                   benchmarks=None if names == ("all",) else names,
                   skip_invalid=args.skip_invalid)
    for line in result.messages:
        print(line)
    if result.refused:
        print(f"error: {sum(m.startswith('unusable ') for m in result.messages)} record file(s)"
              f" under {args.results_dir} cannot be used (listed above); nothing written: fix or"
              " remove them, or pass --skip-invalid to build without them")
        return 1
    for path in result.removed:
        print(f"removed stale {path}")
    print(f"wrote {len(result.written)} file(s) to {args.out}: "
          + ", ".join(p.name for p in result.written))
    if result.pdf is not None:
        print(f"compiled {result.pdf}")
    if result.pdf_error:
        print(f"error: {result.pdf_error}")
        return 1
    return 0


if __name__ == "__main__":  # usable before the CLI lists every command module
    _parser = argparse.ArgumentParser(prog="heartbench tables")
    add_arguments(_parser)
    try:
        raise SystemExit(main(_parser.parse_args()))
    except UserError as _err:
        import sys

        print(f"heartbench tables: error: {_err}", file=sys.stderr)
        raise SystemExit(2) from None
