"""A committed summary of the CPU-twin records' accuracies, and the check against it.

``baselines/twin_summary.csv`` lists every done twin record of the committed ``results/``
(suite, run_id, benchmark, task, label, seed, test accuracy as stored). ``check`` compares
the records under ``--results-dir`` with it: a record whose accuracy differs, a summarised
record that is gone, and a twin record the summary does not list all fail, each named. After
a deliberate re-run, ``check --write-summary`` rewrites the file from the records, prints the
rows it changed, and rewrites its digest ``twin_summary.csv.sha256`` beside it: ``check`` fails
when the summary no longer matches that digest (an edit by hand), so every change to the
summary is one the command made and showed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

from heartbench.errors import UserError, what_is
from heartbench.report.select import KEPT_TWIN_BENCHMARKS

SUMMARY_FILE = "twin_summary.csv"
DIGEST_SUFFIX = ".sha256"
FIELDS: tuple[str, ...] = ("suite", "run_id", "benchmark", "task", "label", "seed", "test_acc")


def _row(record: dict) -> dict[str, str]:
    return {"suite": str(record["suite"]), "run_id": str(record["run_id"]),
            "benchmark": str(record["benchmark"]), "task": str(record["task"]),
            "label": str(record["label"]), "seed": str(record["seed"]),
            "test_acc": repr(float(record["metrics"]["test_acc"]))}


def twin_records(records: list[dict]) -> list[dict]:
    """Done twin records with a test accuracy, smoke (synth) excluded: it is throwaway."""
    return [r for r in records
            if r["benchmark"] in KEPT_TWIN_BENCHMARKS
            and isinstance((r.get("metrics") or {}).get("test_acc"), (int, float))]


def render(records: list[dict]) -> str:
    rows = sorted((_row(r) for r in twin_records(records)),
                  key=lambda r: (r["suite"], r["run_id"]))
    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return handle.getvalue()


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write(path: Path, records: list[dict]) -> tuple[int, list[str]]:
    """Write the summary and its digest atomically; returns (records listed, one line per
    row added, removed or changed against the summary there before)."""
    text = render(records)
    before = load(path) if path.exists() else {}
    after = {(r["suite"], r["run_id"]): r for r in csv.DictReader(io.StringIO(text))}
    changes = [f"added {k[0]}/{k[1]} ({r['label']}, {r['task']}, seed {r['seed']}): "
               f"{r['test_acc']}" for k, r in sorted(after.items()) if k not in before]
    changes += [f"removed {k[0]}/{k[1]} ({r['label']}, {r['task']}, seed {r['seed']})"
                for k, r in sorted(before.items()) if k not in after]
    changes += [f"changed {k[0]}/{k[1]} ({r['label']}, {r['task']}, seed {r['seed']}): "
                f"{before[k]['test_acc']} -> {r['test_acc']}" for k, r in sorted(after.items())
                if k in before and before[k] != r]
    _atomic(path, text)
    _atomic(digest_path(path), f"{hashlib.sha256(text.encode()).hexdigest()}  {path.name}\n")
    return text.count("\n") - 1, changes


def digest_problem(path: Path) -> str | None:
    """None when the summary matches its stored digest, else what is wrong (one line)."""
    digest = digest_path(path)
    try:
        stored = digest.read_text(encoding="utf-8").split()[0]
    except (FileNotFoundError, IndexError):
        return (f"{digest} (the summary's digest) is missing: write both with "
                "`python -m heartbench check --write-summary`")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != stored:
        return (f"{path} changed since its digest {digest} was written (sha256 {actual[:12]}, "
                f"stored {stored[:12]}): edited by hand? only `check --write-summary` rewrites "
                "it (and says what it changed)")
    return None


def load(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    if not path.is_file():
        raise UserError(f"twin summary {path} {what_is(path)}; expected the CSV file"
                        " `python -m heartbench check --write-summary` writes")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError as err:
        raise UserError(f"twin summary {path} is not UTF-8 text (byte {err.start}); expected"
                        " the CSV file `python -m heartbench check --write-summary` writes"
                        ) from None
    except OSError as err:
        raise UserError(f"twin summary {path} cannot be read ({err.strerror})") from None
    for index, row in enumerate(rows, start=2):
        missing = [f for f in FIELDS if not row.get(f)]
        if missing:
            raise UserError(f"{path}: line {index}: missing {', '.join(missing)}")
    return {(r["suite"], r["run_id"]): r for r in rows}


def compare(records: list[dict], summary: dict[tuple[str, str], dict[str, str]],
            suites_present: set[str]) -> list[str]:
    """One line per disagreement between the records and the summary (empty: all agree).

    Only suites that have a folder under the results directory are held to the summary, so
    a results folder with some of the twin suites checks those.
    """
    problems = []
    seen = set()
    for record in twin_records(records):
        key = (str(record["suite"]), str(record["run_id"]))
        seen.add(key)
        row, mine = summary.get(key), _row(record)
        name = f"{key[0]}/{key[1]} ({mine['label']}, {mine['task']}, seed {mine['seed']})"
        if row is None:
            problems.append(f"{name}: not in the twin summary (a new record: after a deliberate "
                            "run, `check --write-summary` adds it and shows what it changed)")
        elif row["test_acc"] != mine["test_acc"] or any(
                row[f] != mine[f] for f in ("benchmark", "task", "label", "seed")):
            problems.append(f"{name}: test_acc {mine['test_acc']} but the summary has "
                            f"{row['test_acc']} ({row['label']}, {row['task']}, seed {row['seed']})")
    for key, row in sorted(summary.items()):
        if key not in seen and key[0] in suites_present:
            problems.append(f"{key[0]}/{key[1]} ({row['label']}, {row['task']}, seed "
                            f"{row['seed']}): in the twin summary but no done record")
    return problems
