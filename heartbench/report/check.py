"""``python -m heartbench check``: are the numbers we show the numbers we have?

(a) The paper's reported numbers (``baselines/``) are self-consistent
    (:func:`heartbench.report.reference.check_consistency`).
(b) Stored measured records agree with the reported numbers for every (row, column) both
    have, within ``--tolerance`` points (default 1.0): measured rows are aggregated exactly
    as the tables do (best grid configuration per task, mean over seeds) and matched to the
    printed rows by label / Heart-LoRA variant (:mod:`heartbench.report.tables`). A table of
    deviations is printed; any beyond the tolerance fails. Rows with no reported
    counterpart (the CPU twin's tasks, labels the paper does not print, few-shot runs) are
    listed, not failed.
(c) ``--reproduce N`` (default 2) re-runs N records of the CPU twins (sampled with
    ``--seed``) through ``heartbench.train.rerun_record(record) -> float`` and requires the
    stored test accuracy back exactly; the twin data of a sampled task is written first when
    its folder is missing (the builders are deterministic). Skipped with a message where
    torch is not installed.

Exit status: 0 when everything holds, 1 on any failure, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from heartbench.errors import UserError

TWIN_BENCHMARKS: tuple[str, ...] = ("vtab_mini", "fewshot_mini", "synth")


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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*header).rstrip(), *[line.format(*r).rstrip() for r in rows]]


def check_reported(baselines: Path | None) -> tuple[list[str], bool, Any]:
    from heartbench.report import reference

    reported = reference.load_reported(baselines)
    findings = reference.check_consistency(reported)
    failures = [f for f in findings if f.level == "fail"]
    notes = [f for f in findings if f.level == "note"]
    lines = [f"(a) reported numbers: {len(findings)} checks, {len(failures)} failed, "
             f"{len(notes)} note(s)"]
    for f in [*failures, *notes]:
        what = {"avg": "Avg. vs mean of group means", "delta": "printed difference",
                "cross": "vs Table 1 group mean"}[f.check]
        if f.level == "fail":
            lines.append(f"  FAIL Table {f.table} {f.method} {f.column}: {what}: printed "
                         f"{f.printed:g}, expected {f.expected:.3f} (tolerance {f.tolerance:g})"
                         f"{'; ' + f.detail if f.detail else ''}")
        else:
            lines.append(f"  note Table {f.table} {f.method} {f.column} ({what}, within "
                         f"{f.tolerance:g}): {f.detail}")
    return lines, not failures, reported


def check_measured(records: list[dict], reported: Any, tolerance: float) -> tuple[list[str], bool]:
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
    for line in select.unplaced(records):
        lines.append(f"  not compared: in no table: {line}")
    return lines, not beyond


def check_reproduce(records: list[dict], count: int, seed: int) -> tuple[list[str], bool]:
    candidates = sorted((r for r in records if r["benchmark"] in TWIN_BENCHMARKS),
                        key=lambda r: (r["suite"], r["run_id"]))
    try:
        from heartbench.data.twin import ensure_twin_task
        from heartbench.train import rerun_record
    except ImportError as err:
        return [f"(c) reproduce: skipped: heartbench.train.rerun_record is not available ({err})"], True
    if not candidates:
        return ["(c) reproduce: skipped: no done CPU-twin records "
                f"(benchmarks {', '.join(TWIN_BENCHMARKS)})"], True
    sample = random.Random(seed).sample(candidates, min(count, len(candidates)))
    lines = [f"(c) reproduce: re-running {len(sample)} of {len(candidates)} CPU-twin records "
             f"(sample seed {seed})"]
    ok = True
    for record in sample:
        stored = record["metrics"]["test_acc"]
        name = f"{record['suite']}/{record['run_id']} {record['label']} {record['task']} seed {record['seed']}"
        try:
            root = record.get("data_root")
            if root and ensure_twin_task(record["benchmark"], root, record["task"]):
                lines.append(f"  wrote the twin data of {record['task']} under {record['data_root']}")
            again = float(rerun_record(record))
        except UserError as err:
            lines.append(f"  ERROR {name}: {err}")
            ok = False
            continue
        # Exactly: the same seed, data and code must give the same number.
        same = stored is not None and again == float(stored)
        ok &= same
        lines.append(f"  {'ok' if same else 'MISMATCH'} {name}: stored {stored}, rerun {again}")
    return lines, ok


def main(args: argparse.Namespace) -> int:
    from heartbench.results import load_records

    if args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.reproduce < 0:
        raise UserError(f"--reproduce must be >= 0, got {args.reproduce}")
    lines, ok_reported, reported = check_reported(args.baselines)
    recordset = load_records(args.results_dir)
    records = recordset.done
    more, ok_measured = check_measured(records, reported, args.tolerance)
    lines += more
    for path, reason in recordset.skipped:
        lines.append(f"  skipped file {path}: {reason}")
    ok_reproduce = True
    if args.reproduce:
        more, ok_reproduce = check_reproduce(records, args.reproduce, args.seed)
        lines += more
    ok = ok_reported and ok_measured and ok_reproduce
    lines.append("check: ok" if ok else "check: FAILED")
    print("\n".join(lines))
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
