"""The paper's reported numbers (``baselines/*.csv``) and their self-consistency checks.

Numbers stay strings as printed (``86.20`` keeps its trailing zero, so a rendered table
shows exactly what the paper prints); :meth:`ReportedRow.value` gives the float. Each
table's file and columns come from its entry in :data:`heartbench.report.table_specs.TABLES`.

Consistency checks (:func:`check_consistency`), each a :class:`Finding`:

* ``avg``: every row's Avg. equals the paper's average, the mean of the three group means
  (Table 1: computed from the 19 task cells; Tables 2-6: from the printed group values),
  within :data:`AVG_TOLERANCE` (0.1). Every printed row of Tables 1-6 passes. A ``note``
  finding records a pass that is not the rounded value: Table 1's Full and Linear
  (68.97 -> 68.9, 57.68 -> 57.6: truncated), Full in Tables 3, 5, 6, Table 4's Full and
  VPT-Deep (averaged from unrounded numbers), Table 5's weight row.
* ``delta``: a printed "(up/down x)" equals the row minus the row it is compared with
  (``delta_vs``) within half a unit of the delta's last printed digit (+0.01 for the
  rounding of the two values it is computed from).
* ``cross``: rows of Tables 2, 3, 5 and 6 that also appear in Table 1 (Full, LoRA,
  Heart-LoRA on ViT-B) agree with Table 1's group means within 0.1. They do; Table 2's
  Heart-LoRA Specialized (86.20 vs 86.225) and Table 6's Heart-LoRA Natural (81.8 vs 81.87)
  are not the rounded Table-1 values (notes).

baselines/README.md lists the same facts for readers of the CSV files.
This module is pure Python plus the csv module: ``tables`` and ``check`` import it fast.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from heartbench.errors import UserError
from heartbench.report.table_specs import TABLES, TableSpec, table_spec

GROUPS: tuple[str, str, str] = ("natural", "specialized", "structured")

# VTAB-1K's 19 tasks in the paper's column order, with their group and printed header.
VTAB_TASKS: tuple[str, ...] = (
    "cifar", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397",
    "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy",
    "clevr_count", "clevr_dist", "dmlab", "kitti", "dsprites_loc", "dsprites_ori",
    "smallnorb_azi", "smallnorb_ele",
)
TASK_GROUP: dict[str, str] = {
    **{t: "natural" for t in VTAB_TASKS[:7]},
    **{t: "specialized" for t in VTAB_TASKS[7:11]},
    **{t: "structured" for t in VTAB_TASKS[11:]},
}
TASK_HEADER: dict[str, str] = dict(zip(VTAB_TASKS, (
    "Cifar100", "Caltech101", "DTD", "Flower102", "Pets", "SVHN", "Sun397",
    "Camelyon", "EuroSAT", "Resisc45", "Retinopathy",
    "Clevr-Count", "Clevr-Dist", "DMLab", "KITTI-Dist", "dSpr-Loc", "dSpr-Ori",
    "sNORB-Azim", "sNORB-Ele",
), strict=True))

AVG_TOLERANCE = 0.1
CROSS_TOLERANCE = 0.1

# table number -> CSV file in baselines/; every table's settings: table_specs.TABLES.
TABLE_FILES: dict[int, str] = {spec.number: spec.file for spec in TABLES if spec.file}
GROUP_COLUMNS: tuple[str, ...] = (*GROUPS, "avg")
DELTA_COLUMNS: tuple[str, ...] = tuple(f"d_{c}" for c in GROUP_COLUMNS)
META_COLUMNS: tuple[str, ...] = ("bold", "key", "printed", "section", "note", "source")


def default_baselines_dir() -> Path:
    """``baselines/`` of the source checkout (the package is installed editable)."""
    return Path(__file__).resolve().parents[2] / "baselines"


@dataclass
class ReportedRow:
    """One printed row: values are the strings as printed ('' where the paper has none)."""

    table: int
    method: str
    key: str
    printed: str
    section: str
    note: str
    values: dict[str, str]
    deltas: dict[str, str] = field(default_factory=dict)
    delta_vs: str = ""
    bold: frozenset[str] = frozenset()  # value columns the paper prints in bold in this row

    def value(self, column: str) -> float | None:
        text = self.values.get(column, "")
        return float(text) if text != "" else None


@dataclass
class ReportedTable:
    number: int
    path: Path
    columns: tuple[str, ...]  # value columns: size_mb, avg, tasks (T1) or groups + avg
    rows: list[ReportedRow]

    def row(self, key: str) -> ReportedRow | None:
        return next((r for r in self.rows if r.key == key), None)


@dataclass(frozen=True)
class Finding:
    """One consistency check. level: 'ok', 'fail' or 'note' (odd but within tolerance)."""

    table: int
    method: str
    check: str  # avg | delta | cross | rounding
    column: str
    printed: float
    expected: float
    tolerance: float
    level: str
    detail: str = ""

    @property
    def diff(self) -> float:
        return self.printed - self.expected


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise UserError(f"reported numbers file {path} does not exist") from None


def _number(text: str, path: Path, where: str) -> str:
    text = text.strip()
    if text == "":
        return text
    try:
        float(text)
    except ValueError:
        raise UserError(f"{path}: {where}: {text!r} is not a number") from None
    return text


def _bold_columns(text: str, columns: tuple[str, ...], path: Path, where: str) -> frozenset[str]:
    """The ``bold`` field: value columns separated by spaces, each one of ``columns``."""
    names = text.split()
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise UserError(f"{path}: {where} column bold: {', '.join(map(repr, unknown))} "
                        f"is not a value column (expected some of: {', '.join(columns)})")
    return frozenset(names)


def value_columns(spec: TableSpec) -> tuple[str, ...]:
    """A table's value columns in its CSV file: Size, Avg. and the 19 tasks for a per-task
    table (Table 1), else the group columns and Avg. (the printed differences beside them)."""
    if spec.per_task:
        return (*(("size_mb",) if spec.size else ()), "avg", *VTAB_TASKS)
    return GROUP_COLUMNS


def load_table(number: int, baselines_dir: Path | None = None) -> ReportedTable:
    """Read one of the paper's tables from its CSV file."""
    spec = table_spec(number)
    directory = Path(baselines_dir) if baselines_dir is not None else default_baselines_dir()
    path = directory / spec.file
    raw = _read_csv(path)
    columns = value_columns(spec)
    deltas = () if spec.per_task else (*DELTA_COLUMNS, "delta_vs")
    needed = ("method", *columns, *META_COLUMNS, *deltas)
    rows = []
    for index, record in enumerate(raw, start=2):  # line 1 is the header
        missing = [c for c in needed if c not in record or record[c] is None]
        if missing:
            raise UserError(f"{path}: line {index}: missing column(s) {', '.join(missing)}")
        where = f"line {index}"
        rows.append(ReportedRow(
            table=number,
            method=record["method"],
            key=record["key"],
            printed=record["printed"],
            section=record["section"],
            note=record["note"],
            values={c: _number(record[c], path, f"{where} column {c}") for c in columns},
            deltas={c: _number(record.get(c, ""), path, f"{where} column {c}")
                    for c in DELTA_COLUMNS if record.get(c, "")},
            delta_vs=record.get("delta_vs", "") or "",
            bold=_bold_columns(record["bold"], columns, path, where),
        ))
    return ReportedTable(number=number, path=path, columns=columns, rows=rows)


def load_reported(baselines_dir: Path | None = None) -> dict[int, ReportedTable]:
    """All six tables, by number."""
    return {spec.number: load_table(spec.number, baselines_dir) for spec in TABLES if spec.file}


def group_means(values: dict[str, float], task_group: dict[str, str]) -> dict[str, float | None]:
    """Mean of each group's tasks; None for a group with a task missing from ``values``."""
    out: dict[str, float | None] = {}
    for group in GROUPS:
        tasks = [t for t, g in task_group.items() if g == group]
        if not tasks or any(values.get(t) is None for t in tasks):
            out[group] = None
        else:
            out[group] = sum(values[t] for t in tasks) / len(tasks)  # type: ignore[misc]
    return out


def paper_average(groups: dict[str, float | None]) -> float | None:
    """The paper's Avg.: mean of the three group means (None if one is missing)."""
    if any(groups.get(g) is None for g in GROUPS):
        return None
    return sum(groups[g] for g in GROUPS) / len(GROUPS)  # type: ignore[misc]


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _finding(table: int, method: str, check: str, column: str, printed: float,
             expected: float, tolerance: float, note_if_not_rounded: str = "") -> Finding:
    ok = abs(printed - expected) <= tolerance + 1e-9
    level = "ok" if ok else "fail"
    detail = ""
    if ok and note_if_not_rounded:
        level, detail = "note", note_if_not_rounded
    return Finding(table, method, check, column, printed, expected, tolerance, level, detail)


def check_consistency(tables: dict[int, ReportedTable]) -> list[Finding]:
    """Every consistency finding over the reported tables (see the module docstring)."""
    findings: list[Finding] = []
    # Table 1's group means by row key: the other tables repeat some of its rows.
    t1_groups: dict[str, dict[str, float | None]] = {}
    for number, table in sorted(tables.items()):
        if not table_spec(number).per_task:
            continue
        for row in table.rows:
            tasks = {t: row.value(t) for t in VTAB_TASKS}
            groups = group_means(tasks, TASK_GROUP)  # type: ignore[arg-type]
            if number == 1:
                t1_groups[row.key] = groups
            expected = paper_average(groups)
            printed = row.value("avg")
            if expected is None or printed is None:
                continue
            not_rounded = _not_rounded(row.values["avg"], expected)
            findings.append(_finding(number, row.method, "avg", "avg", printed, expected,
                                     AVG_TOLERANCE, not_rounded))
    for number, table in sorted(tables.items()):
        spec = table_spec(number)
        if spec.per_task:
            continue
        for row in table.rows:
            groups = {g: row.value(g) for g in GROUPS}
            expected = paper_average(groups)
            printed = row.value("avg")
            if expected is not None and printed is not None:
                findings.append(_finding(number, row.method, "avg", "avg", printed, expected,
                                         AVG_TOLERANCE, _not_rounded(row.values["avg"], expected)))
            if row.deltas:
                ref = table.row(row.delta_vs)
                for dcol, text in sorted(row.deltas.items()):
                    col = dcol[2:]
                    if ref is None or ref.value(col) is None or row.value(col) is None:
                        findings.append(Finding(number, row.method, "delta", col, float(text),
                                                math.nan, 0.0, "fail",
                                                f"no row {row.delta_vs!r} to compare with"))
                        continue
                    tol = 0.5 * 10 ** -_decimals(text) + 0.01
                    findings.append(_finding(number, row.method, "delta", col, float(text),
                                             row.value(col) - ref.value(col), tol))  # type: ignore[operator]
            # Rows that Table 1 also has, on its backbone: group values agree.
            if spec.swin == table_spec(1).swin and row.key in t1_groups:
                for group in GROUPS:
                    printed_g, expected_g = row.value(group), t1_groups[row.key][group]
                    if printed_g is None or expected_g is None:
                        continue
                    findings.append(_finding(
                        number, row.method, "cross", group, printed_g, expected_g,
                        CROSS_TOLERANCE, _not_rounded(row.values[group], expected_g,
                                                      "Table 1 group mean")))
    return findings


def _not_rounded(text: str, expected: float, what: str = "mean of the group means") -> str:
    """A note when the printed value is not ``expected`` rounded to the printed digits."""
    digits = _decimals(text)
    if f"{expected:.{digits}f}" == f"{float(text):.{digits}f}":
        return ""
    return f"printed {text}, {what} {expected:.3f} rounds to {expected:.{digits}f}"


def consistency_failures(tables: dict[int, ReportedTable]) -> list[Finding]:
    return [f for f in check_consistency(tables) if f.level == "fail"]


# ---------------------------------------------------------------------------
# Table 1's Size column against the storage arithmetic
# ---------------------------------------------------------------------------
SIZES_FILE = "sizes_vitb.csv"
ORDER_FACTOR = 1.1  # "the same order of parameter count as LoRA" (FourierFT, MoRA)


@dataclass(frozen=True)
class SizeRule:
    """What ``methods`` computes for a Table-1 row on ViT-B, and how the paper's Size must agree."""

    key: str
    rule: str  # equal | range | order
    mib: tuple[float, ...]  # stored MiB of each listed config (2 for a range)
    why: str


def load_sizes(baselines_dir: Path | None = None) -> dict[str, SizeRule]:
    """``sizes_vitb.csv``: stored bytes computed by ``heartbench methods`` on ViT-B, per row key."""
    directory = Path(baselines_dir) if baselines_dir is not None else default_baselines_dir()
    path = directory / SIZES_FILE
    grouped: dict[str, list[dict[str, str]]] = {}
    for index, record in enumerate(_read_csv(path), start=2):
        if record.get("rule") not in ("equal", "range", "order"):
            raise UserError(f"{path}: line {index} column rule: expected equal, range or order, "
                            f"got {record.get('rule')!r}")
        _number(record.get("stored_bytes") or "", path, f"line {index} column stored_bytes")
        grouped.setdefault(record["key"], []).append(record)
    return {key: SizeRule(key, rows[0]["rule"],
                          tuple(float(r["stored_bytes"]) / 2**20 for r in rows), rows[0]["why"])
            for key, rows in grouped.items()}


def check_sizes(table1: ReportedTable, sizes: dict[str, SizeRule]) -> list[Finding]:
    """Every printed Size against the storage arithmetic of its method (rows without: none)."""
    findings = []
    for row in table1.rows:
        rule, printed = sizes.get(row.key), row.value("size_mb")
        if rule is None or printed is None:
            continue
        half = 0.5 * 10 ** -_decimals(row.values["size_mb"])
        if rule.rule == "equal":
            computed = rule.mib[0]
            # Printed rounded, or truncated (SSF: 0.7852 MiB printed 0.78).
            ok = abs(printed - computed) <= half + 1e-9 or 0 <= computed - printed < 2 * half
            expected, tol = computed, half
        elif rule.rule == "range":
            low, high = min(rule.mib), max(rule.mib)
            ok = low - half - 1e-9 <= printed <= high + half + 1e-9
            expected, tol = min(max(printed, low), high), half
        else:
            computed = rule.mib[0]
            ok = computed / ORDER_FACTOR <= printed <= computed * ORDER_FACTOR
            expected, tol = computed, computed * (ORDER_FACTOR - 1)
        findings.append(Finding(1, row.method, "size", "size_mb", printed, expected, tol,
                                "ok" if ok else "fail",
                                f"{rule.rule} ({rule.why}); computed "
                                + ", ".join(f"{m:.4f}" for m in rule.mib) + " MiB"))
    return findings


# ---------------------------------------------------------------------------
# The transcription itself: a committed digest per file
# ---------------------------------------------------------------------------
CHECKSUMS_FILE = "SHA256SUMS"


def check_checksums(baselines_dir: Path | None = None) -> list[str]:
    """Files whose sha256 differs from ``SHA256SUMS`` (``sha256sum -c`` format), as lines.

    Most Table-1 cells have no check in the paper itself (a cell can move by about 2 points
    and the Avg. still agree within rounding), so the transcription is pinned: a changed
    number fails here until the digest is updated on purpose (``sha256sum *.csv``).
    """
    import hashlib

    directory = Path(baselines_dir) if baselines_dir is not None else default_baselines_dir()
    path = directory / CHECKSUMS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return [f"{path} does not exist"]
    problems = []
    for line in lines:
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        target = directory / name.strip()
        try:
            actual = hashlib.sha256(target.read_bytes()).hexdigest()
        except FileNotFoundError:
            problems.append(f"{target} listed in {path} does not exist")
            continue
        if actual != digest.strip():
            problems.append(f"{target} changed since {path} was written (sha256 {actual[:12]}, "
                            f"recorded {digest.strip()[:12]})")
    return problems

