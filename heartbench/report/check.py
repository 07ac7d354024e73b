"""``python -m heartbench check``: are the numbers we show the numbers we have?

Sections, each named (``--skip NAME[,NAME]`` switches one off; a section that cannot run,
e.g. without torch or without the paper's text, fails ``check`` unless switched off), in order:

``reported``
    The paper's reported numbers (``baselines/``): self-consistent
    (:func:`heartbench.report.reference.check_consistency`), Table 1's Size column against
    ``baselines/sizes_vitb.csv`` and each file against its digest in ``baselines/SHA256SUMS``.
``paper-text``
    Every number, bold mark and printed difference of ``baselines/`` against the paper's own
    text (:mod:`heartbench.report.papertext`; ``--paper-text PATH``, default
    ``../shared/paper/heart-lora-paper.md`` beside the checkout), to the printed digit.
``measured``
    Stored records against the reported numbers for every (row, column) both have, within
    ``--tolerance`` points (aggregated exactly as the tables do).
``run-ids``
    Every record's ``run_id`` recomputed from its stored settings
    (:func:`heartbench.rerun.record_identity`, the legacy completion ``spec_from_record``
    uses); a record whose id does not follow from them fails, named. Needs torch.
``summary``
    CPU-twin records against ``baselines/twin_summary.csv`` (:mod:`heartbench.report.summary`)
    and that file against its digest: a changed, missing or unlisted record fails, named.
    ``--summary PATH`` names the summary of another results folder.
``records``
    Every file under ``--results-dir`` that should be a record reads as one.
``adapters``
    The adapter beside every done record (:func:`heartbench.results.adapter_problem`):
    missing, truncated, another method's, other tensor names or other bytes (size and sha256
    where the record stores them) fails, named; ``adapter.kept = false`` is intended.
    ``--seal-adapters`` stores size, sha256 and tensor names in done records written before
    they were stored, for adapters that verify, and exits (no retraining).
``paper``
    The committed ``paper/`` (``--paper DIR``) against a rebuild of the records and
    baselines into a temporary folder (``tables``' own code): every differing, missing or
    extra file fails, named (a .tex file with its first differing line). Figure 5
    (``fig5_*``) comes from ``figure5``, which runs the models: listed, not rebuilt here;
    ``preview.pdf`` depends on the TeX installation and is not committed.
``reproduce``
    ``--reproduce N`` (default 2; 0 = off) re-runs N CPU-twin records, sampled with
    ``--seed`` (default: a fresh seed, printed, so each invocation samples others), and
    requires the stored test accuracy back exactly. A record stores the CPU kind it was
    trained on (``cpu``: torch's kernel level, AVX2 / AVX512 ...); a re-run that differs on
    another kind is reported as a kernel difference, not a changed record (the ``summary``
    section is what catches a changed record).

The last line says which sections ran, which were switched off and the result.
Exit status: 0 when everything holds, 1 on any failure, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heartbench.errors import UserError
from heartbench.report.select import KEPT_TWIN_BENCHMARKS

SECTIONS: tuple[str, ...] = ("reported", "paper-text", "measured", "run-ids", "summary",
                             "records", "adapters", "paper", "reproduce")


@dataclass
class Section:
    """One section's outcome: ok, failed, or could not run (``unavailable``: why)."""

    name: str
    lines: list[str] = field(default_factory=list)
    ok: bool = True
    unavailable: str = ""


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
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the --reproduce sample (default: a fresh one, printed)")
    parser.add_argument("--summary", default=None, metavar="PATH",
                        help="committed summary of the twin records' accuracies (default: "
                             "baselines/twin_summary.csv when --results-dir is the checkout's "
                             "results/)")
    parser.add_argument("--seal-adapters", action="store_true",
                        help="store size, sha256 and tensor names of each done record's adapter "
                             "in records written before they were stored (adapters that verify "
                             "only), and exit")
    parser.add_argument("--write-summary", action="store_true",
                        help="rewrite the summary and its digest from the records (after a "
                             "deliberate re-run), print what changed, and exit")
    parser.add_argument("--paper", type=Path, default=None, metavar="DIR",
                        help="committed tables and figures to compare with a rebuild "
                             "(default: paper/ when --results-dir is the checkout's results/)")
    parser.add_argument("--paper-text", type=Path, default=None, metavar="PATH",
                        help="the paper's text (default: ../shared/paper/heart-lora-paper.md "
                             "beside the checkout)")
    parser.add_argument("--skip", default="", metavar="SECTION[,SECTION]",
                        help=f"switch sections off by name: {', '.join(SECTIONS[1:])} "
                             "(a section that cannot run fails check unless switched off)")


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


def checkout_root() -> Path:
    from heartbench.report import reference

    return reference.default_baselines_dir().parent


def is_checkout_results(results_dir: Path) -> bool:
    return Path(results_dir).resolve() == (checkout_root() / "results").resolve()


def default_summary(results_dir: Path, baselines: Path | None) -> Path | None:
    """The committed summary applies to the checkout's own results/ only."""
    from heartbench.report.summary import SUMMARY_FILE

    if not is_checkout_results(results_dir):
        return None
    return (Path(baselines) if baselines is not None else checkout_root() / "baselines") / SUMMARY_FILE


def check_paper_text(reported: Any, path: Path | None) -> Section:
    from heartbench.report import papertext

    section = Section("paper-text")
    path = Path(path) if path is not None else papertext.default_paper_text()
    if not path.is_file():
        section.unavailable = f"no paper text at {path} (--paper-text PATH)"
        return section
    compared, problems = papertext.compare(reported, path.read_text(encoding="utf-8"))
    section.lines = [f"(paper-text) baselines/ vs {path}: {compared} cells compared (value, "
                     f"bold, printed difference), {len(problems)} disagreement(s)"]
    section.lines += [f"  FAIL {p}" for p in problems]
    section.ok = not problems
    return section


def check_run_ids(records: list[dict], paths: dict[int, Path]) -> Section:
    """Every record's run_id against the hash of its stored settings."""
    section = Section("run-ids")
    try:
        from heartbench.rerun import record_identity
        from heartbench.suite import run_id_of
    except ImportError as err:
        section.unavailable = f"needs torch to complete stored configs ({err})"
        return section
    wrong = []
    for record in records:
        try:
            expected = run_id_of(record_identity(record))
        except (KeyError, TypeError, ValueError, UserError) as err:
            expected = f"none (settings unreadable: {err})"
        if expected != record.get("run_id"):
            where = paths.get(id(record), f"{record.get('suite')}/{record.get('run_id')}")
            wrong.append(f"  FAIL {where}: run_id {record.get('run_id')} does not follow from "
                         f"its stored settings (they hash to {expected})")
    section.lines = [f"(run-ids) {len(records)} record(s), {len(wrong)} run_id(s) that do not "
                     "follow from the stored settings", *wrong]
    section.ok = not wrong
    return section


def check_summary(records: list[dict], results_dir: Path, path: Path | None) -> Section:
    from heartbench.report import summary

    section = Section("summary")
    if path is None:
        section.unavailable = ("no twin summary for a results folder other than the "
                               "checkout's results/ (--summary PATH)")
        return section
    listed = summary.load(path)
    suites = {p.name for p in Path(results_dir).iterdir() if p.is_dir()} if Path(
        results_dir).is_dir() else set()
    problems = summary.compare(records, listed, suites)
    digest = summary.digest_problem(path)
    problems += [digest] if digest else []
    section.lines = [f"(summary) twin records vs {path}: "
                     f"{len(summary.twin_records(records))} compared, "
                     f"{len(problems)} problem(s)", *[f"  FAIL {p}" for p in problems]]
    section.ok = not problems
    return section


def check_paper(results_dir: Path, baselines: Path | None, paper: Path | None,
                tolerance: float) -> Section:
    """The committed paper/ against a rebuild into a temporary folder, byte for byte."""
    from heartbench.report.rebuild import package_drift, paper_differences

    section = Section("paper")
    if paper is None:
        if not is_checkout_results(results_dir):
            section.unavailable = ("no committed paper/ for a results folder other than the "
                                   "checkout's results/ (--paper DIR)")
            return section
        paper = checkout_root() / "paper"
    paper = Path(paper)
    if not paper.is_dir():
        section.unavailable = f"{paper} does not exist (--paper DIR)"
        return section
    problems, compared, outside = paper_differences(results_dir, baselines, paper, tolerance)
    section.lines = [f"(paper) {paper} vs a rebuild of the records and baselines: {compared} "
                     f"file(s) compared byte for byte, {len(problems)} differ; not rebuilt: "
                     f"{', '.join(outside) or 'none'} (Figure 5: `python -m heartbench "
                     "figure5`, runs the models)"]
    section.lines += [f"  FAIL {p}" for p in problems]
    drift = package_drift(checkout_root() / "constraints.txt")
    if problems and drift:
        section.lines.append("  (installed versions differ from the pins the PDFs were made with:"
                             f" {'; '.join(drift)}; `pip install -c constraints.txt ...`)")
    if problems:
        section.lines.append("  (after a deliberate change: `python -m heartbench tables` "
                             "rebuilds paper/)")
    section.ok = not problems
    return section


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


def check_adapters(recordset: Any) -> Section:
    """(adapters) The adapter beside every done record is the one it ran with (see the docstring)."""
    from heartbench.results import adapter_kept, adapter_problem

    done = [(r, p) for r, p in zip(recordset.records, recordset.paths, strict=True)
            if r["status"] == "done"]
    kept = [(r, p) for r, p in done if adapter_kept(r)]
    problems = [(p, why) for r, p in kept if (why := adapter_problem(r, p)) is not None]
    damaged = {str(p) for p, _ in problems}
    hashed = sum(1 for r, p in kept if (r.get("adapter") or {}).get("sha256")
                 and str(p) not in damaged)
    lines = [f"(adapters) adapters of {len(done)} done record(s): {len(kept) - len(problems)} verified "
             f"({hashed} by stored sha256, the rest by their file's own header; "
             "`check --seal-adapters` stores the hashes), "
             f"{len(done) - len(kept)} deliberately not kept, {len(problems)} damaged"]
    lines += [f"  FAIL record {path}: {why}" for path, why in problems]
    return Section("adapters", lines, not problems)


def seal_adapters(recordset: Any) -> list[str]:
    """``--seal-adapters``: fill in the adapter facts of older done records (atomically)."""
    from heartbench.results import adapter_problem, record_path, seal_adapter, write_record

    sealed, left = 0, []
    for record, path in zip(recordset.records, recordset.paths, strict=True):
        new = seal_adapter(record, path)
        if new is None:
            why = adapter_problem(record, path)
            if why is not None:
                left.append(f"  not sealed: {path}: {why}")
            continue
        root = path.parent.parent
        if record_path(root, record["suite"], record["run_id"]) != path:
            left.append(f"  not sealed: {path} is not at <results>/<suite>/<run_id>.json")
            continue
        write_record(root, new, overwrite=True)
        sealed += 1
    return [f"sealed {sealed} record(s): adapter size, sha256 and tensor names stored", *left]


def _content_change(record: dict) -> str | None:
    """Whether the data or weights a re-run read differ from the record's (``content``)."""
    from heartbench.content import file_sha256
    from heartbench.data.fingerprint import task_fingerprint

    stored = record.get("content") or {}
    if not isinstance(stored, dict) or not stored:
        return None
    weights = (record.get("backbone") or {}).get("weights")
    root = record.get("data_root")
    now = {"data": task_fingerprint(root, record["benchmark"], record["task"]) if root else None,
           "weights": file_sha256(weights) if weights not in (None, "timm") else None}
    for key in ("data", "weights"):
        if stored.get(key) and now[key] and stored[key] != now[key]:
            return (f"the {key} it read differ from the record's ({key} {stored[key][:12]} "
                    f"stored, {now[key][:12]} now)")
    return None


def _cpu_kind(info: Any) -> str | None:
    return info.get("capability") if isinstance(info, dict) else None


def check_reproduce(records: list[dict], count: int, seed: int,
                    emit: Callable[[str], None] = print) -> Section:
    """Re-run a sample of CPU-twin records (smoke's synth records are throwaway: never); each
    line goes to ``emit`` as it is known, since a re-run takes a minute."""
    section = Section("reproduce")
    other: float | None = None
    candidates = sorted((r for r in records if r["benchmark"] in KEPT_TWIN_BENCHMARKS),
                        key=lambda r: (r["suite"], r["run_id"]))
    try:
        from heartbench.data.twin import ensure_twin_task
        from heartbench.provenance import cpu_info
        from heartbench.rerun import rerun_record
    except ImportError as err:
        section.unavailable = f"heartbench.rerun.rerun_record is not available ({err})"
        return section
    if not candidates:
        section.unavailable = ("no done CPU-twin records (benchmarks "
                               f"{', '.join(KEPT_TWIN_BENCHMARKS)})")
        return section
    here = cpu_info()
    sample = random.Random(seed).sample(candidates, min(count, len(candidates)))
    emit(f"(reproduce) re-running {len(sample)} of {len(candidates)} CPU-twin records "
         f"(sample seed {seed}; --seed {seed} repeats this sample) on {here['capability']} "
         f"({here['model']})")
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
            section.ok = False
            continue
        # Exactly: the same seed, data, code and CPU kernels must give the same number.
        if stored is not None and again == float(stored):
            emit(f"  ok {name}: stored {stored}, rerun {again} (record's CPU: "
                 f"{_cpu_kind(record.get('cpu')) or 'not stored'})")
            continue
        changed = _content_change(record)
        if changed:
            section.ok = False
            emit(f"  MISMATCH {name}: stored {stored}, rerun {again}: {changed}")
            continue
        theirs = _cpu_kind(record.get("cpu"))
        if theirs is not None and theirs != here["capability"]:
            emit(f"  KERNEL DIFFERENCE {name}: stored {stored} on {theirs}, rerun {again} on "
                 f"{here['capability']}: CPU float kernels differ between these kinds; not a "
                 "changed record (the summary section checks the stored value)")
            continue
        if theirs is None:  # made before records stored their CPU kind: probe the kernels
            emit(f"  {name}: stored {stored}, rerun {again}; the record predates stored CPU "
                 "kinds: re-running it with torch's baseline kernels (ATEN_CPU_CAPABILITY="
                 "default) to see whether its result depends on the kernels")
            other = rerun_with_kernels(record, "default")
            if other is not None and other != again:
                emit(f"  KERNEL DIFFERENCE {name}: stored {stored}; {again} with "
                     f"{here['capability']} kernels, {other} with baseline kernels on the same "
                     "machine and data: its result depends on the CPU kernels, so the stored "
                     "value is taken as another CPU kind's, not a changed record")
                continue
        section.ok = False
        probe = ("the baseline-kernel re-run failed" if other is None else
                 f"the same {other} with baseline kernels")
        why = (f"same data and weights, and {probe}: a changed record or code"
               if theirs is None else
               f"same data, weights and CPU kind {theirs}: a changed record or code")
        emit(f"  MISMATCH {name}: stored {stored}, rerun {again} ({why})")
    return section


def rerun_with_kernels(record: dict, capability: str) -> float | None:
    """The record re-run in a child process whose torch dispatches to ``capability``
    kernels (``ATEN_CPU_CAPABILITY``: fixed when torch starts); None if that run failed."""
    import json
    import os
    import subprocess

    code = ("import json, sys; from heartbench.rerun import rerun_record; "
            "print(rerun_record(json.load(sys.stdin)))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(record), env=env,
                              capture_output=True, text=True, timeout=3600)
        return float(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def _skips(text: str) -> set[str]:
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(SECTIONS))
    if unknown:
        raise UserError(f"--skip: unknown section(s) {', '.join(unknown)} (sections: "
                        f"{', '.join(SECTIONS[1:])})")
    return names


def _summary_path(args: argparse.Namespace) -> Path | None:
    if args.summary == "none":
        raise UserError("--summary none: switch the section off by name instead, --skip summary")
    if args.summary is not None:
        return Path(args.summary)
    return default_summary(args.results_dir, args.baselines)


def write_summary(args: argparse.Namespace, records: list[dict]) -> int:
    from heartbench.report import summary

    path = _summary_path(args)
    if path is None:
        raise UserError("--write-summary needs --summary PATH for a results folder other "
                        "than the checkout's results/")
    count, changes = summary.write(path, records)
    for line in changes:
        print(f"  {line}")
    print(f"wrote {path} and its digest {summary.digest_path(path).name}: {count} twin "
          f"record(s), {len(changes)} row(s) added, removed or changed")
    return 0


def main(args: argparse.Namespace) -> int:
    from heartbench.results import load_records

    if args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.reproduce < 0:
        raise UserError(f"--reproduce must be >= 0, got {args.reproduce}")
    skip = _skips(args.skip)
    if "reported" in skip:
        raise UserError("--skip reported: the reported numbers are what every other section "
                        "compares with; they cannot be switched off")
    if args.reproduce == 0:
        skip.add("reproduce")
    summary_path = _summary_path(args)  # a usage error before any output
    recordset = load_records(args.results_dir)
    records = recordset.done
    if args.seal_adapters:
        lines = seal_adapters(recordset)
        for line in lines:
            print(line)
        return 1 if len(lines) > 1 else 0  # a record left unsealed is named and fails
    if args.write_summary:
        return write_summary(args, records)

    def emit(line: str) -> None:  # each section as soon as it is known
        print(line, flush=True)

    sections: list[Section] = []

    def run(name: str, make: Callable[[], Section]) -> None:
        if name in skip:
            sections.append(Section(name))
            return
        section = make()
        for line in section.lines:
            emit(line)
        if section.unavailable:
            emit(f"({name}) could not run: {section.unavailable}; FAIL unless switched off "
                 f"with --skip {name}")
        sections.append(section)

    lines, ok_reported, reported = check_reported(args.baselines)
    for line in lines:
        emit(line.replace("(a) reported numbers", "(reported) baselines/", 1))
    sections.append(Section("reported", ok=ok_reported))
    paths = dict(zip(map(id, recordset.records), recordset.paths, strict=False))
    run("paper-text", lambda: check_paper_text(reported, args.paper_text))
    run("measured", lambda: _measured(records, reported, args.tolerance, args.results_dir))
    run("run-ids", lambda: check_run_ids(recordset.records, paths))
    run("summary", lambda: check_summary(records, args.results_dir, summary_path))
    run("records", lambda: _unreadable(recordset))
    run("adapters", lambda: check_adapters(recordset))
    run("paper", lambda: check_paper(args.results_dir, args.baselines, args.paper,
                                     args.tolerance))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    run("reproduce", lambda: check_reproduce(records, args.reproduce, seed, emit))

    ran = [s for s in sections if s.name not in skip]
    ok = all(s.ok and not s.unavailable for s in ran)
    failed = [s.name for s in ran if not s.ok or s.unavailable]
    off = [s.name for s in sections if s.name in skip]
    checked = ", ".join(f"{s.name}{' (could not run)' if s.unavailable else ''}" for s in ran)
    emit(f"check: {'ok' if ok else 'FAILED'}: checked {checked}"
         + (f"; switched off: {', '.join(off)}" if off else "")
         + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0 if ok else 1


def _measured(records: list[dict], reported: Any, tolerance: float,
              results_dir: str | Path) -> Section:
    lines, ok = check_measured(records, reported, tolerance, results_dir)
    lines[0] = lines[0].replace("(b) measured vs reported", "(measured) records vs reported", 1)
    return Section("measured", lines, ok)


def _unreadable(recordset: Any) -> Section:
    lines = [f"(records) record files: {len(recordset.records)} read, "
             f"{len(recordset.skipped)} unreadable"]
    lines += [f"  FAIL unreadable record {path}: {reason}" for path, reason in recordset.skipped]
    return Section("records", lines, not recordset.skipped)


if __name__ == "__main__":  # usable before the CLI lists every command module
    _parser = argparse.ArgumentParser(prog="heartbench check")
    add_arguments(_parser)
    try:
        raise SystemExit(main(_parser.parse_args()))
    except UserError as _err:
        print(f"heartbench check: error: {_err}", file=sys.stderr)
        raise SystemExit(2) from None
