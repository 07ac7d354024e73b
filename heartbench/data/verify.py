"""``data verify``: does a VTAB-1K or few-shot copy match the standard one (``manifest.py``)?

Cheap checks (list files only, plus a stat per image): the list files exist, their line
counts, labels are integers in [0, classes), every listed image exists, and
train800 + val200 = train800val200 (as multisets of (label, image size): NOAH's layout
stores each list's images in its own folder). Deep checks read every image: it decodes,
its mode and size (statistics), and no training image is byte-identical to a test image.

Problems are collected per task, never raised, so that the report has one row per task.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from heartbench.data import manifest as mf
from heartbench.data.fingerprint import copy_fingerprint, info_fingerprint, task_fingerprint
from heartbench.data.tasks import (
    BENCHMARKS,
    FEWSHOT_BENCHMARKS,
    TaskInfo,
    get_benchmark,
    resolve_task,
)
from heartbench.errors import UserError

Entry = tuple[str, int]  # (path relative to the list's base folder, label)
Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


def _no_progress(items: Iterable[Any], desc: str, total: int) -> Iterable[Any]:
    return items


@dataclass
class TaskCheck:
    """The outcome for one task: problems (fail), notes (information), statistics."""

    task: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> str:
        if self.problems:
            return f"{self.task:<22} FAIL  " + "; ".join(self.problems)
        counts = "/".join(str(v) for v in self.counts.values())
        extra = "".join(f"; {n}" for n in self.notes)
        return f"{self.task:<22} ok    {counts}{extra}"


# ---------------------------------------------------------------------------
# Reading lists without stopping at the first problem
# ---------------------------------------------------------------------------
def read_entries(path: Path, num_classes: int, check: TaskCheck) -> list[Entry] | None:
    """The (path, label) lines of a list file; bad lines become one problem each kind."""
    if not path.is_file():
        check.problems.append(f"missing list file {path.name}")
        return None
    entries: list[Entry] = []
    bad: dict[str, tuple[int, str]] = {}  # kind -> (count, first occurrence)
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            kind = None
            if len(parts) != 2:
                kind, what = "lines without a label", f"line {lineno}"
            else:
                try:
                    label = int(parts[1])
                except ValueError:
                    kind, what = "non-integer labels", f"line {lineno}: {parts[1]!r}"
                else:
                    if not 0 <= label < num_classes:
                        kind = f"labels outside [0, {num_classes})"
                        what = f"line {lineno}: {label}"
                    entries.append((parts[0], label))
            if kind:
                n, first = bad.get(kind, (0, what))
                bad[kind] = (n + 1, first)
    for kind, (n, first) in bad.items():
        check.problems.append(f"{path.name}: {n} {kind} (first: {first})")
    return entries


def check_count(name: str, entries: list[Entry] | None, expected: int, check: TaskCheck
                ) -> None:
    if entries is None:
        return
    check.counts[name] = len(entries)
    if len(entries) != expected:
        check.problems.append(f"{name}: {len(entries)} lines, expected {expected}")


def check_present(base: Path, entries: list[Entry], what: str, check: TaskCheck,
                  listings: dict[Path, set[str] | None]) -> None:
    """Every listed image exists (one directory listing per folder, not a stat each)."""
    missing, first = 0, None
    for rel, _ in entries:
        path = base / rel
        folder = path.parent
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder))
            except OSError:
                listings[folder] = None
        names = listings[folder]
        if names is None or path.name not in names:
            missing += 1
            first = first or rel
    if missing:
        check.problems.append(f"{what}: {missing} listed images missing (first: {first})")


def _all_present(base: Path, lists: dict[str, list[Entry] | None], check: TaskCheck) -> bool:
    """Check every readable list's images exist under ``base``; True when every list was read."""
    listings: dict[Path, set[str] | None] = {}
    for key, entries in lists.items():
        if entries is not None:
            check_present(base, entries, key, check, listings)
    return all(entries is not None for entries in lists.values())


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


# ---------------------------------------------------------------------------
# Deep checks: decode, statistics, content hashes
# ---------------------------------------------------------------------------
@dataclass
class ImageScan:
    """What reading every image of a task found."""

    hashes: dict[str, str] = field(default_factory=dict)  # relative path -> sha1
    modes: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)


def scan_images(base: Path, rels: list[str], progress: Progress, desc: str) -> ImageScan:
    from PIL import Image

    scan = ImageScan()
    for rel in progress(rels, desc, len(rels)):
        try:
            data = (base / rel).read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                scan.modes[img.mode] += 1
                scan.sizes[img.size] += 1
        except Exception as err:  # PIL raises assorted errors for corrupt files
            text = str(err).replace(" <_io.BytesIO object", "").split(" at 0x")[0]
            scan.broken.append(f"{rel} ({type(err).__name__}: {text})")
            continue
        scan.hashes[rel] = hashlib.sha1(data).hexdigest()
    return scan


def report_scan(scan: ImageScan, check: TaskCheck) -> None:
    if scan.broken:
        check.problems.append(f"{len(scan.broken)} images do not decode"
                              f" (first: {scan.broken[0]})")
    if scan.sizes:
        widths = [w for w, _ in scan.sizes.elements()]
        heights = [h for _, h in scan.sizes.elements()]
        common = scan.sizes.most_common(1)[0][0]
        check.stats.update(
            modes=dict(scan.modes), size_min=[min(widths), min(heights)],
            size_max=[max(widths), max(heights)], size_most_common=list(common))
        check.notes.append("modes " + ",".join(f"{m}:{n}" for m, n in scan.modes.items())
                           + f" sizes {min(widths)}x{min(heights)}..{max(widths)}x"
                           f"{max(heights)}")


def report_duplicates(train: Iterable[str], test: Iterable[str], scan: ImageScan,
                      allowed: str | None, check: TaskCheck) -> None:
    """Byte-identical images between the training lists and test."""
    by_hash: dict[str, str] = {}
    for r in train:  # the first training image with each hash names it
        if r in scan.hashes:
            by_hash.setdefault(scan.hashes[r], r)
    dups = [(by_hash[scan.hashes[r]], r) for r in test
            if r in scan.hashes and scan.hashes[r] in by_hash]
    check.stats["train_test_duplicates"] = len(dups)
    if not dups:
        return
    text = f"{len(dups)} test images are byte-identical to training images" \
           f" (first: {dups[0][1]} = {dups[0][0]})"
    if allowed:
        check.notes.append(f"{text}: expected ({allowed})")
    else:
        check.problems.append(text)


# ---------------------------------------------------------------------------
# VTAB-1K
# ---------------------------------------------------------------------------
def check_vtab_task(root: Path, name: str, deep: bool = False,
                    progress: Progress = _no_progress, fingerprint: bool = True) -> TaskCheck:
    from heartbench.data.vtab import task_dir

    info = resolve_task("vtab1k", name)
    spec = mf.VTAB1K[info.name]
    check = TaskCheck(info.name)
    if spec.num_classes != info.num_classes:  # the registry and the manifest must agree
        check.problems.append(f"registry says {info.num_classes} classes, manifest"
                              f" {spec.num_classes}")
    try:
        folder = task_dir(root, info)
    except UserError:
        check.problems.append(f"no task folder (tried {', '.join(info.folder_names)})")
        return check
    lists: dict[str, list[Entry] | None] = {}
    for split, expected in spec.counts.items():
        lists[split] = read_entries(folder / f"{split}.txt", spec.num_classes, check)
        check_count(split, lists[split], expected, check)
    if not _all_present(folder, lists, check):  # the rest needs every list
        return check
    _check_union(folder, lists, check)
    seen = len({label for _, label in lists["test"]})
    check.notes.append(f"{seen}/{spec.num_classes} classes in test")
    check.stats["test_classes_seen"] = seen
    if deep:
        rels = sorted({rel for entries in lists.values() for rel, _ in entries})
        scan = scan_images(folder, rels, progress, info.name)
        report_scan(scan, check)
        train = [r for s in ("train800", "val200", "train800val200") for r, _ in lists[s]]
        report_duplicates(train, [r for r, _ in lists["test"]], scan, spec.duplicates_ok,
                          check)
        _check_union_deep(lists, scan, check)
    if fingerprint:
        check.fingerprint = task_fingerprint(root, "vtab1k", info.name)
    return check


def _check_union(folder: Path, lists: dict[str, list[Entry]], check: TaskCheck) -> None:
    def keyed(split: str) -> Counter:
        return Counter((label, _size(folder / rel)) for rel, label in lists[split])

    union = keyed("train800") + keyed("val200")
    if union != keyed("train800val200"):
        differ = sum(((union - keyed("train800val200")) +
                      (keyed("train800val200") - union)).values())
        check.problems.append(f"train800val200 is not train800 + val200 ({differ} entries"
                              " differ in label or image size)")


def _check_union_deep(lists: dict[str, list[Entry]], scan: ImageScan, check: TaskCheck
                      ) -> None:
    def hashed(split: str) -> Counter:
        return Counter((label, scan.hashes.get(rel)) for rel, label in lists[split])

    if hashed("train800") + hashed("val200") != hashed("train800val200"):
        check.problems.append("train800val200's images are not those of train800 + val200"
                              " (content hashes differ)")


# ---------------------------------------------------------------------------
# Few-shot
# ---------------------------------------------------------------------------
def check_fewshot_dataset(root: Path, name: str, deep: bool = False,
                          progress: Progress = _no_progress,
                          shots: Iterable[int] = mf.FEWSHOT_SHOTS,
                          seeds: Iterable[int] = mf.FEWSHOT_SEEDS,
                          fingerprint: bool = True) -> TaskCheck:
    from heartbench.data.fewshot import annotation_name, dataset_dir

    info = resolve_task("fewshot", name)
    spec = mf.FEWSHOT[info.name]
    check = TaskCheck(info.name)
    try:
        folder = dataset_dir(root, info)
    except UserError:
        check.problems.append(f"no dataset folder (tried {', '.join(info.folder_names)})")
        return check
    notes, base = folder / "annotations", folder / "images"
    lists: dict[str, list[Entry] | None] = {}
    for k in shots:
        for s in seeds:
            key = f"train_{k}shot_seed{s}"
            lists[key] = read_entries(notes / annotation_name("train", k, s),
                                      spec.num_classes, check)
            check_count(key, lists[key], k * spec.num_classes, check)
    for split in ("val", "test"):
        lists[split] = read_entries(notes / annotation_name(split), spec.num_classes, check)
        check_count(split, lists[split], getattr(spec, split), check)
    if not _all_present(base, lists, check):  # the rest needs every list
        return check
    train = {rel for key, entries in lists.items() if key.startswith("train")
             for rel, _ in entries}
    test = [rel for rel, _ in lists["test"]]
    shared = [rel for rel in test if rel in train]
    if shared:
        check.problems.append(f"{len(shared)} test images are listed in training lists"
                              f" (first: {shared[0]})")
    if deep:
        rels = sorted({rel for entries in lists.values() for rel, _ in entries})
        scan = scan_images(base, rels, progress, info.name)
        report_scan(scan, check)
        report_duplicates(sorted(train), test, scan, None, check)
    check.counts = {k: v for k, v in check.counts.items() if not k.startswith("train_")
                    or k.endswith("seed0")}
    if fingerprint:
        check.fingerprint = task_fingerprint(root, "fewshot", info.name)
    return check


# ---------------------------------------------------------------------------
# Whole copies
# ---------------------------------------------------------------------------
def check_custom_task(info: TaskInfo, deep: bool = False,
                      progress: Progress = _no_progress) -> TaskCheck:
    """A task of the user's own (``[tasks.NAME]`` of a suite, ``info.root`` its folder): no
    manifest to compare with, so the layout only: train800val200.txt and test.txt exist,
    labels are integers in [0, num_classes), every listed image exists, train800 + val200 =
    train800val200 where those two lists are given; ``deep``: every image decodes and no
    test image is a training image."""
    assert info.root is not None
    folder = Path(info.root)
    check = TaskCheck(info.name)
    if not folder.is_dir():
        check.problems.append(f"no task folder {folder}")
        return check
    optional = [s for s in ("train800", "val200") if (folder / f"{s}.txt").is_file()]
    if len(optional) == 1:
        check.problems.append(f"{optional[0]}.txt without"
                              f" {'val200' if optional[0] == 'train800' else 'train800'}.txt")
    lists: dict[str, list[Entry] | None] = {}
    for split in ("train800val200", "test", *(optional if len(optional) == 2 else [])):
        lists[split] = read_entries(folder / f"{split}.txt", info.num_classes, check)
        if lists[split] is not None:
            check.counts[split] = len(lists[split])  # type: ignore[arg-type]
    if not _all_present(folder, lists, check):
        return check
    if len(optional) == 2:
        _check_union(folder, lists, check)  # type: ignore[arg-type]
    for split in ("train800val200", "test"):
        if not lists[split]:
            check.problems.append(f"{split}.txt lists no image")
    seen = len({label for _, label in lists["test"] or []})
    check.notes.append(f"{seen}/{info.num_classes} classes in test")
    if deep and check.ok:
        rels = sorted({rel for entries in lists.values() for rel, _ in entries or []})
        scan = scan_images(folder, rels, progress, info.name)
        report_scan(scan, check)
        train = [r for s, e in lists.items() if s != "test" for r, _ in e or []]
        report_duplicates(train, [r for r, _ in lists["test"] or []], scan, None, check)
    if check.ok:
        check.fingerprint = info_fingerprint(folder.parent, info.benchmark, info)
    return check


def manifest_tasks(benchmark: str) -> dict[str, TaskInfo]:
    if benchmark not in mf.MANIFEST_BENCHMARKS:
        raise UserError(f"data verify checks the standard copies of"
                        f" {' and '.join(mf.MANIFEST_BENCHMARKS)}, not {benchmark!r}"
                        " (the CPU twins are written by heartbench itself)")
    return get_benchmark(benchmark)


def verify(root: str | os.PathLike, benchmark: str = "vtab1k",
           tasks: Iterable[str] | None = None, deep: bool = False,
           progress: Progress = _no_progress) -> list[TaskCheck]:
    """One TaskCheck per task of ``benchmark`` (all of them when ``tasks`` is None)."""
    infos = manifest_tasks(benchmark)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist or is not a folder")
    names = list(infos) if tasks is None else [resolve_task(benchmark, t).name for t in tasks]
    check = check_vtab_task if benchmark == "vtab1k" else check_fewshot_dataset
    return [check(root, name, deep, progress) for name in names]


# What writes each benchmark's data, to name it when a folder is another benchmark's copy.
WRITERS: dict[str, str] = {
    "vtab1k": "'python -m heartbench data prepare vtab1k'",
    "fewshot": "NOAH's few-shot lists (docs/data.md)",
    "synth": "'python -m heartbench data synth'",
    "vtab_mini": "'python -m heartbench data vtab_mini'",
    "fewshot_mini": "'python -m heartbench data fewshot_mini'",
}


def _folders(infos: dict[str, TaskInfo]) -> set[str]:
    return {name for info in infos.values() for name in info.folder_names}


def describe_folder(root: str | os.PathLike, benchmark: str,
                    tasks: Iterable[str] | None = None) -> str | None:
    """None when ``root`` holds a task folder of ``benchmark`` (of ``tasks``); otherwise one
    line saying what the folder looks like instead: another benchmark's copy (a ``data
    synth`` or twin copy, by its task folders and layout), empty, or unknown folders."""
    root = Path(root)
    infos = get_benchmark(benchmark)
    wanted = infos if tasks is None else {t: resolve_task(benchmark, t) for t in tasks}
    present = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if present & _folders(wanted):
        return None
    head = f"{root} is not a {benchmark} copy: it holds none of the {len(wanted)} task folders"
    if not present:
        make = (f"'python -m heartbench data prepare vtab1k --out {root}' builds it"
                if benchmark == "vtab1k" else "heartbench cannot build it: docs/data.md says"
                " where NOAH's lists and images come from")
        return f"{head} (it has none at all); {make}"
    few = any((root / name / "annotations").is_dir() for name in present)  # few-shot layout
    best = max((b for b in BENCHMARKS if b != benchmark),
               key=lambda b: (len(present & _folders(get_benchmark(b))),
                              (b in FEWSHOT_BENCHMARKS) == few))
    hit = sorted(present & _folders(get_benchmark(best)))
    if not hit:
        shown = ", ".join(sorted(present)[:8]) + (" ..." if len(present) > 8 else "")
        return f"{head}; it holds {shown}, none of them a task of any heartbench benchmark"
    return (f"{head}; it looks like {best} data, as {WRITERS[best]} writes (its folders"
            f" {', '.join(hit)} are {best} tasks). data verify checks the standard vtab1k and"
            " fewshot copies only; `run` checks the synthetic and twin data itself")


def summary_line(root: str | os.PathLike, benchmark: str, checks: list[TaskCheck]) -> str:
    bad = [c.task for c in checks if not c.ok]
    if not bad:
        return (f"{benchmark} at {root}: all {len(checks)} tasks match the manifest"
                f" (fingerprint {fingerprint_of(checks)})")
    return (f"{benchmark} at {root}: {len(bad)} of {len(checks)} tasks do not match the"
            f" manifest: {', '.join(bad)}")


def fingerprint_of(checks: list[TaskCheck]) -> str:
    return copy_fingerprint({c.task: c.fingerprint or "-" for c in checks})


def fingerprint_json(root: str | os.PathLike, benchmark: str, checks: list[TaskCheck],
                     deep: bool) -> dict[str, Any]:
    import heartbench

    return {
        "kind": "heartbench data fingerprint", "benchmark": benchmark,
        "root": str(Path(root).resolve()), "deep": deep, "ok": all(c.ok for c in checks),
        "fingerprint": fingerprint_of(checks),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "heartbench": heartbench.__version__,
        "tasks": {c.task: {"ok": c.ok, "fingerprint": c.fingerprint, "counts": c.counts,
                           "problems": c.problems, "notes": c.notes, "stats": c.stats}
                  for c in checks},
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Before ``run`` submits: the cheap checks, as one line
# ---------------------------------------------------------------------------
ALLOW_ENV = "HEARTBENCH_NONSTANDARD_DATA"


def check_standard_copy(root: str | os.PathLike, benchmark: str, tasks: Iterable[str],
                        shots: Iterable[int] | None = None,
                        seeds: Iterable[int] | None = None, deep: bool = False) -> str | None:
    """For vtab1k and fewshot: None when the run's tasks match the manifest (cheap checks;
    ``deep``: also every image decodes and no test image is a training image, as
    ``data verify --deep``).

    Otherwise raises one UserError naming the first task that does not and its problems,
    or, with ``HEARTBENCH_NONSTANDARD_DATA=1``, returns that text as a warning. Other
    benchmarks (synth, the CPU twins) have their own sizes and are not checked.
    """
    if benchmark not in mf.MANIFEST_BENCHMARKS:
        return None
    root = Path(root)
    for task in tasks:
        if benchmark == "vtab1k":
            check = check_vtab_task(root, task, deep=deep, fingerprint=False)
        else:
            check = check_fewshot_dataset(root, task, deep=deep,
                                          shots=tuple(shots or mf.FEWSHOT_SHOTS),
                                          seeds=tuple(seeds if seeds is not None
                                                      else mf.FEWSHOT_SEEDS),
                                          fingerprint=False)
        if check.ok:
            continue
        more = f" (and {len(check.problems) - 1} more)" if len(check.problems) > 1 else ""
        text = (f"data at {root} is not the standard {benchmark} copy: {check.task}:"
                f" {check.problems[0]}{more}; see 'python -m heartbench data verify {root}"
                f" --benchmark {benchmark}', or set {ALLOW_ENV}=1 to run on it anyway")
        if os.environ.get(ALLOW_ENV) == "1":
            return text
        raise UserError(text)
    return None
