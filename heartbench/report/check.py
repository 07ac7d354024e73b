"""``python -m heartbench check``: are the numbers we show the numbers we have?

(a) The paper's reported numbers (``baselines/``): self-consistent
    (:func:`heartbench.report.reference.check_consistency`: Avg. vs group means, printed
    differences, rows repeated across tables), Table 1's Size column against the storage
    arithmetic of ``baselines/sizes_vitb.csv`` (:func:`~heartbench.report.reference.check_sizes`)
    and each file against its digest in ``baselines/SHA256SUMS`` (a cell no paper check
    covers still cannot change unnoticed).
(b) Stored measured records agree with the reported numbers for every (row, column) both
    have, within ``--tolerance`` points (default 1.0): measured rows are aggregated exactly
    as the tables do (best grid configuration per task, mean over seeds) and matched to the
    printed rows by label / Heart-LoRA variant (:mod:`heartbench.report.tables`). A table of
    deviations is printed; any beyond the tolerance fails. Rows with no reported
    counterpart (the CPU twin's tasks, labels the paper does not print, few-shot runs) are
    listed, not failed.
(c) CPU-twin records against ``baselines/twin_summary.csv`` (:mod:`heartbench.report.summary`):
    a record whose accuracy changed, one that is gone or one the summary does not list fails,
    named. Applied by default when ``--results-dir`` is the checkout's ``results/``;
    ``--summary PATH`` names another, ``--summary none`` skips it; ``--write-summary``
    rewrites it from the records after a deliberate re-run.
(d) Every file under ``--results-dir`` that should be a record must read as one: a
    truncated or unreadable record fails (``tables`` would silently leave it out).
(e) ``--reproduce N`` (default 2) re-runs N records of the CPU twins (sampled with
    ``--seed``) through ``heartbench.train.rerun_record(record) -> float`` and requires the
    stored test accuracy back exactly; the twin data of a sampled task is written first when
    its folder is missing (the builders are deterministic). Skipped with a message where
    torch is not installed.

Exit status: 0 when everything holds, 1 on any failure, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heartbench.errors import UserError
from heartbench.report.select import KEPT_TWIN_BENCHMARKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", default="results", type=Path,
                        help="folder of run records (default: results)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="allowed |measured - reported| in accuracy points (default 1.0)")
    parser.add_argument("--baselines", type=Path, default=None,
                        help="folder of the paper's numbers (default: baselines/ of the checkout)")
    parser.add_argument("--reproduce", type=int, default=2, metavar="N",
                        help="re-run N sampled CPU-twin records and require identical accuracy,"
                             " writing their twin data when missing (default 2; 0 skips)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the --reproduce sample (default 0)")
    parser.add_argument("--summary", default=None, metavar="PATH",
                        help="committed summary of the twin records' accuracies (default: "
                             "baselines/twin_summary.csv when --results-dir is the checkout's "
                             "results/; 'none' skips)")
    parser.add_argument("--write-summary", action="store_true",
                        help="rewrite the summary from the records (after a deliberate re-run) "
                             "and exit")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*header).rstrip(), *[line.format(*r).rstrip() for r in rows]]


def check_reported(baselines: Path | None) -> tuple[list[str], bool, Any]:
    from heartbench.report import reference

    reported = reference.load_reported(baselines)
    findings = reference.check_consistency(reported)
    findings += reference.check_sizes(reported[1], reference.load_sizes(baselines))
    failures = [f for f in findings if f.level == "fail"]
    notes = [f for f in findings if f.level == "note"]
    changed = reference.check_checksums(baselines)
    lines = [f"(a) reported numbers: {len(findings)} checks, {len(failures)} failed, "
             f"{len(notes)} note(s); {len(changed)} file(s) changed since their digest"]
    for f in [*failures, *notes]:
        what = {"avg": "Avg. vs mean of group means", "delta": "printed difference",
                "cross": "vs Table 1 group mean", "size": "Size vs storage arithmetic"}[f.check]
        if f.level == "fail":
            lines.append(f"  FAIL Table {f.table} {f.method} {f.column}: {what}: printed "
                         f"{f.printed:g}, expected {f.expected:.3f} (tolerance {f.tolerance:g})"
                         f"{'; ' + f.detail if f.detail else ''}")
        else:
            lines.append(f"  note Table {f.table} {f.method} {f.column} ({what}, within "
                         f"{f.tolerance:g}): {f.detail}")
    lines += [f"  FAIL {line}" for line in changed]
    return lines, not failures and not changed, reported


def default_summary(results_dir: Path, baselines: Path | None) -> Path | None:
    """The committed summary applies to the checkout's own results/ only."""
    from heartbench.report import reference
    from heartbench.report.summary import SUMMARY_FILE

    root = reference.default_baselines_dir().parent
    if Path(results_dir).resolve() != (root / "results").resolve():
        return None
    return (Path(baselines) if baselines is not None else root / "baselines") / SUMMARY_FILE


def check_summary(records: list[dict], results_dir: Path, path: Path | None) -> tuple[list[str], bool]:
    from heartbench.report import summary

    if path is None:
        return ["(c) twin records vs summary: skipped (no summary for this results folder; "
                "--summary PATH)"], True
    listed = summary.load(path)
    suites = {p.name for p in Path(results_dir).iterdir() if p.is_dir()} if Path(
        results_dir).is_dir() else set()
    problems = summary.compare(records, listed, suites)
    lines = [f"(c) twin records vs {path}: {len(summary.twin_records(records))} compared, "
             f"{len(problems)} problem(s)"]
    lines += [f"  FAIL {p}" for p in problems]
    return lines, not problems


def check_measured(records: list[dict], reported: Any, tolerance: float,
                   results_dir: str | Path = "results") -> tuple[list[str], bool]:
    from heartbench.report import select, stats

    blocks = stats.build_blocks(records, reported)
    devs, unmatched = stats.deviations(blocks, reported)
    beyond = [d for d in devs if abs(d.diff) > tolerance + 1e-9]
    lines = [f"(b) measured vs reported: {len(devs)} compared, {len(beyond)} beyond "
             f"+-{tolerance:g} points"]
    if devs:
        rows = [[f"T{d.table}", d.label, d.column, f"{d.measured:.2f}", f"{d.reported:g}",
                 f"{d.diff:+.2f}", str(d.seeds), "BEYOND" if d in beyond else "ok"]
                for d in devs]
        lines += ["  " + line for line in _table(
            ["table", "row", "column", "measured", "reported", "diff", "seeds", "status"], rows)]
    fewshot = sum(1 for r in records if r.get("shots") is not None)
    for line in unmatched:
        lines.append(f"  not compared: {line}")
    if fewshot:
        lines.append(f"  not compared: {fewshot} few-shot record(s): the paper prints them only "
                     "as Figure 2")
    for line in select.unplaced(records, str(results_dir)):
        lines.append(f"  not compared: in no table: {line}")
    for line in stats.rows_without_common_seed(records):
        lines.append(f"  not compared: {line}")
    return lines, not beyond


def check_reproduce(records: list[dict], count: int, seed: int,
                    emit: Callable[[str], None] = print) -> bool:
    """Re-run a sample of CPU-twin records (smoke's synth records are throwaway: never); each
    line goes to ``emit`` as it is known, since a re-run takes a minute."""
    candidates = sorted((r for r in records if r["benchmark"] in KEPT_TWIN_BENCHMARKS),
                        key=lambda r: (r["suite"], r["run_id"]))
    try:
        from heartbench.data.twin import ensure_twin_task
        from heartbench.train import rerun_record
    except ImportError as err:
        emit(f"(e) reproduce: skipped: heartbench.train.rerun_record is not available ({err})")
        return True
    if not candidates:
        emit("(e) reproduce: skipped: no done CPU-twin records"
             f" (benchmarks {', '.join(KEPT_TWIN_BENCHMARKS)})")
        return True
    sample = random.Random(seed).sample(candidates, min(count, len(candidates)))
    emit(f"(e) reproduce: re-running {len(sample)} of {len(candidates)} CPU-twin records "
         f"(sample seed {seed})")
    ok = True
    for i, record in enumerate(sample, 1):
        stored = record["metrics"]["test_acc"]
        name = f"{record['suite']}/{record['run_id']} {record['label']} {record['task']} seed {record['seed']}"
        emit(f"  [{i}/{len(sample)}] training {name} ({(record.get('train') or {}).get('epochs', '?')} epochs)")
        try:
            root = record.get("data_root")
            if root and ensure_twin_task(record["benchmark"], root, record["task"]):
                emit(f"  wrote the twin data of {record['task']} under {record['data_root']}")
            again = float(rerun_record(record, progress=sys.stderr.isatty()))
        except UserError as err:
            emit(f"  ERROR {name}: {err}")
            ok = False
            continue
        # Exactly: the same seed, data and code must give the same number.
        same = stored is not None and again == float(stored)
        ok &= same
        emit(f"  {'ok' if same else 'MISMATCH'} {name}: stored {stored}, rerun {again}")
    return ok


def main(args: argparse.Namespace) -> int:
    from heartbench.report import summary
    from heartbench.results import load_records

    if args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.reproduce < 0:
        raise UserError(f"--reproduce must be >= 0, got {args.reproduce}")
    if args.summary == "none":
        summary_path = None
    elif args.summary is not None:
        summary_path = Path(args.summary)
    else:
        summary_path = default_summary(args.results_dir, args.baselines)
    recordset = load_records(args.results_dir)
    records = recordset.done
    if args.write_summary:
        if summary_path is None:
            raise UserError("--write-summary needs --summary PATH for a results folder other "
                            "than the checkout's results/")
        count = summary.write(summary_path, records)
        print(f"wrote {summary_path}: {count} twin record(s)")
        return 0
    def emit(line: str) -> None:  # each section as soon as it is known
        print(line, flush=True)

    lines, ok_reported, reported = check_reported(args.baselines)
    for line in lines:
        emit(line)
    more, ok_measured = check_measured(records, reported, args.tolerance, args.results_dir)
    more2, ok_summary = check_summary(records, args.results_dir, summary_path)
    for line in [*more, *more2, f"(d) record files: {len(recordset.records)} read, "
                 f"{len(recordset.skipped)} unreadable"]:
        emit(line)
    for path, reason in recordset.skipped:
        emit(f"  FAIL unreadable record {path}: {reason}")
    ok_reproduce = True
    if args.reproduce:
        ok_reproduce = check_reproduce(records, args.reproduce, args.seed, emit)
    ok = ok_reported and ok_measured and ok_summary and not recordset.skipped and ok_reproduce
    emit("check: ok" if ok else "check: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":  # usable before the CLI lists every command module
    _parser = argparse.ArgumentParser(prog="heartbench check")
    add_arguments(_parser)
    try:
        raise SystemExit(main(_parser.parse_args()))
    except UserError as _err:
        import sys

        print(f"heartbench check: error: {_err}", file=sys.stderr)
        raise SystemExit(2) from None
