"""Run records on disk: one JSON file per run, ``<results_dir>/<suite>/<run_id>.json``.

Writing is atomic (a temporary file in the same folder, fsync, then a rename), so a
reader never sees half a record, and refuses to replace an existing record unless asked.
Reading never deletes or changes a file: what cannot be used (truncated or invalid JSON,
missing keys, files of an unknown kind) is reported by name in ``RecordSet.skipped``.

No torch here: ``tables``, ``check`` and the light regression env import this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from heartbench.errors import UserError, what_is

SCHEMA = 1
# Keys without which a record cannot be placed in a table or figure.
REQUIRED_KEYS: tuple[str, ...] = (
    "schema", "run_id", "status", "suite", "benchmark", "task", "method", "label", "seed",
    "metrics",
)
STATUSES: tuple[str, ...] = ("done", "failed")
# Files that legitimately live beside records (adapter weights, checkpoints, locks).
COMPANION_SUFFIXES: tuple[str, ...] = (".safetensors", ".ckpt", ".lock", ".claim")
IGNORED_NAMES: frozenset[str] = frozenset({".gitkeep", ".gitignore"})
# Folders that belong to the launcher (submitit's job pickles and logs), not to records.
# "superseded": records a suite no longer plans (its defaults changed), moved aside by
# `heartbench status SUITE --archive-superseded`; kept, never read as results.
SUPERSEDED_DIR = "superseded"
IGNORED_DIRS: frozenset[str] = frozenset({".submitit", SUPERSEDED_DIR})
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

FRAME_COLUMNS: tuple[str, ...] = (
    "run_id", "suite", "benchmark", "task", "group", "shots", "method", "label", "seed",
    "eval_protocol", "status", "test_acc", "val_acc", "stored_bytes", "trainable_params",
    "backbone", "grid", "method_config", "path",
)


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value) or value.endswith(".json"):
        raise UserError(
            f"record {what} {value!r} cannot be a file name; expected letters, digits, '.', '_', '-', '+'"
        )
    return value


def record_path(results_dir: str | Path, suite: str, run_id: str) -> Path:
    """Where the record of ``run_id`` in ``suite`` lives."""
    return Path(results_dir) / _check_name("suite", suite) / f"{_check_name('run_id', run_id)}.json"


def checkpoint_path(results_dir: str | Path, suite: str, run_id: str) -> Path:
    """Where ``train.execute`` (and a pack, ``pack.execute_pack``) keeps the run's final-phase
    checkpoint while it trains: beside its record."""
    return record_path(results_dir, suite, run_id).parent / f"{run_id}.final.ckpt"


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays (and anything with .item/.tolist) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_record(results_dir: str | Path, record: dict, overwrite: bool = False) -> Path:
    """Write ``record`` atomically to its :func:`record_path`; return that path.

    Raises FileExistsError if the record exists and ``overwrite`` is False, UserError if the
    results directory cannot be written.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks required key(s): {', '.join(missing)}")
    path = record_path(results_dir, record["suite"], record["run_id"])
    # Serialise first: a record that cannot be written never leaves a temporary file.
    text = json.dumps(record, indent=1, sort_keys=True, default=_jsonable) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"results directory {Path(results_dir)} is not writable ({err.strerror})") from None
    if path.exists() and not overwrite:
        raise FileExistsError(f"record {path} exists (pass overwrite=True to replace it)")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(
            f"results directory {Path(results_dir)} is not writable ({err.strerror})") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600: records are for every reader of results/
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the name exists: no race between two writers of one run.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(
                    f"record {path} exists (pass overwrite=True to replace it)") from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise FileExistsError(
                        f"record {path} exists (pass overwrite=True to replace it)") from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def validate_record(record: Any) -> str | None:
    """Why ``record`` cannot be used, or None when it can."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        return f"missing required key(s): {', '.join(missing)}"
    if record["schema"] != SCHEMA:
        return f"unsupported schema {record['schema']!r} (this heartbench reads {SCHEMA})"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r}; expected one of: {', '.join(STATUSES)}"
    if not isinstance(record["metrics"], dict) or "test_acc" not in record["metrics"]:
        return "metrics is not an object with test_acc"
    problem = value_problem(record)
    if problem is not None:
        return problem
    for key in ("grid", "method_config", "adapter", "backbone", "heart", "train", "search",
                "content"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"{key} is not an object"
    for key in ("run_id", "suite", "benchmark", "task", "method", "label"):
        if not isinstance(record[key], str) or not record[key]:
            return f"{key} is not a non-empty string"
    return field_problem(record)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def field_problem(record: dict) -> str | None:
    """Why a field the tables group or sort by has the wrong type, or None: ``seed`` an
    integer; ``group`` and ``eval_protocol`` strings or null; ``shots`` and ``num_classes``
    integers >= 1 or null (a hand-edited list or NaN there would crash or split a table)."""
    if not _is_int(record["seed"]):
        return f"seed is {record['seed']!r}; expected an integer"
    for key in ("group", "eval_protocol"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} is {value!r}; expected a string"
    for key in ("shots", "num_classes"):
        value = record.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            return f"{key} is {value!r}; expected an integer >= 1"
    return None


# Accuracies are percentages; a value outside this range is not a result (a unit slip, a
# hand edit, a broken writer) and must never reach a table or figure.
ACCURACY_RANGE: tuple[float, float] = (0.0, 100.0)
ACCURACY_KEYS: tuple[str, ...] = ("test_acc", "val_acc", "final_test_acc")


def _bad_accuracy(value: Any) -> str | None:
    low, high = ACCURACY_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} (a {type(value).__name__})"
    if not math.isfinite(value) or not low <= value <= high:
        return f"{value!r}"
    return None


def value_problem(record: dict) -> str | None:
    """Why the values of a record that has the required keys cannot be shown, or None: a done
    record needs a finite ``metrics.test_acc`` in [0, 100]; any accuracy stored (test, val,
    final) must be one; sizes must be finite and >= 0. Failed records keep nulls."""
    metrics = record["metrics"]
    low, high = ACCURACY_RANGE
    for key in ACCURACY_KEYS:
        value = metrics.get(key)
        if value is None and (key != "test_acc" or record["status"] != "done"):
            continue
        bad = _bad_accuracy(value)
        if bad is not None:
            return (f"metrics.{key} is {bad}; expected a finite accuracy in "
                    f"[{low:g}, {high:g}] (percent)")
    adapter = record.get("adapter") or {}
    for key in ("stored_bytes", "head_bytes", "trainable_params"):
        value = adapter.get(key) if isinstance(adapter, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value < 0:
            return f"adapter.{key} is {value!r}; expected a number >= 0"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def flatten(record: dict, path: Path | None = None) -> dict[str, Any]:
    """One frame row: the useful columns of a record, plus ``grid.<key>`` per grid key."""
    metrics = record.get("metrics") or {}
    adapter = record.get("adapter") or {}
    backbone = record.get("backbone") or {}
    grid = dict(record.get("grid") or {})
    row = {
        "run_id": record["run_id"],
        "suite": record["suite"],
        "benchmark": record["benchmark"],
        "task": record["task"],
        "group": record.get("group"),
        "shots": record.get("shots"),
        "method": record["method"],
        "label": record["label"],
        "seed": record["seed"],
        "eval_protocol": record.get("eval_protocol"),
        "status": record["status"],
        "test_acc": _number(metrics.get("test_acc")),
        "val_acc": _number(metrics.get("val_acc")),
        "stored_bytes": _number(adapter.get("stored_bytes")),
        "trainable_params": _number(adapter.get("trainable_params")),
        "backbone": backbone.get("name"),
        "grid": grid,
        "method_config": dict(record.get("method_config") or {}),
        "path": str(path) if path is not None else None,
    }
    for key, value in sorted(grid.items()):
        row[f"grid.{key}"] = value
    return row


@dataclass
class RecordSet:
    """Records read from a results directory.

    ``records``: the usable records (dicts, in path order); ``frame``: one row per record;
    ``skipped``: (path, reason) for every file that was not used.
    """

    records: list[dict] = field(default_factory=list)
    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FRAME_COLUMNS)))
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def done(self) -> list[dict]:
        """Records with status "done": the only ones tables and figures use."""
        return [r for r in self.records if r["status"] == "done"]


def load_records(results_dir: str | Path) -> RecordSet:
    """Read every record under ``results_dir`` (any depth), never changing a file."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory {root} {what_is(root)}; expected a folder of records")
    records: list[dict] = []
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name in IGNORED_NAMES or IGNORED_DIRS.intersection(path.relative_to(root).parts):
            continue
        # Companions, including an interrupted run's "<id>.final.ckpt.prev" / ".ckpt.tmp" /
        # ".ckpt.epoch" (its progress marker, and that marker's ".tmp").
        if path.suffix in COMPANION_SUFFIXES or _checkpoint_companion(path):
            continue
        if path.suffix != ".json":
            reason = ("temporary file of an unfinished write" if path.suffix == ".tmp"
                      else "unknown file (not a record, adapter, checkpoint or lock)")
            skipped.append((path, reason))
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            skipped.append((path, "not UTF-8 text"))
            continue
        except json.JSONDecodeError as err:
            skipped.append((path, f"invalid or truncated JSON ({err.msg} at line {err.lineno})"))
            continue
        except OSError as err:
            skipped.append((path, f"unreadable ({err.strerror})"))
            continue
        reason = validate_record(record)
        if reason is None and record["run_id"] != path.stem:
            reason = f"run_id {record['run_id']!r} does not match the file name"
        if reason is not None:
            skipped.append((path, reason))
            continue
        # The same run (run_id) may be stored by several suites, possibly under different
        # labels: every file is a record here; tables count one run once per row.
        records.append(record)
        paths.append(path)
    rows = [flatten(r, p) for r, p in zip(records, paths, strict=True)]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(FRAME_COLUMNS))
    grid_cols = sorted(c for c in frame.columns if c.startswith("grid."))
    frame = frame[[*FRAME_COLUMNS, *grid_cols]].reset_index(drop=True)
    return RecordSet(records=records, frame=frame, skipped=skipped, paths=paths)


def _checkpoint_companion(path: Path) -> bool:
    """``<id>.<phase>.ckpt.{prev,tmp,epoch}`` and ``<id>.<phase>.ckpt.epoch.tmp``."""
    stem = path.with_suffix("")
    if path.suffix == ".tmp" and stem.suffix == ".epoch":
        stem = stem.with_suffix("")
    return path.suffix in (".prev", ".tmp", ".epoch") and stem.suffix == ".ckpt"


# ---------------------------------------------------------------------------
# Adapter files: what a done record promises is beside it
# ---------------------------------------------------------------------------
# Facts a record stores about its adapter file (``adapter_facts``), verified on every read
# that decides whether a run is done: ``run``'s skip, ``status``, ``check``. Records written
# before them are verified on what the file itself says (``seal_adapter`` adds them).
ADAPTER_FACTS: tuple[str, ...] = ("file_bytes", "sha256", "tensors")
# Above this size an adapter's sha256 is cached by (path, size, mtime) in the cache folder
# of heartbench.content: a paper-scale Full adapter is 330 MB, and `run` re-reads every
# done record it skips.
HASH_CACHE_BYTES = 64 * 2**20
ADAPTER_HASH_CACHE = "adapter-sha256.json"
_MAX_HEADER = 100 * 2**20


def adapter_sha256(path: Path) -> str:
    """sha256 of an adapter's content: its metadata (canonical JSON) and, in name order, each
    tensor's name, dtype, shape and bytes. Not of the file's bytes: safetensors writes its
    metadata in no fixed order, so two writes of one adapter differ there. Cached for large
    files by (path, size, mtime), see HASH_CACHE_BYTES."""
    stat = path.stat()
    key = f"{path.resolve()}"
    if stat.st_size >= HASH_CACHE_BYTES:
        from heartbench.content import _read_cache, cache_dir

        hit = _read_cache(cache_dir() / ADAPTER_HASH_CACHE).get(key)
        if isinstance(hit, dict) and hit.get("size") == stat.st_size and \
                hit.get("mtime_ns") == stat.st_mtime_ns and isinstance(hit.get("sha256"), str):
            return hit["sha256"]
    header = safetensors_header(path)
    digest = hashlib.sha256(json.dumps(header.get("__metadata__") or {}, sort_keys=True)
                            .encode())
    with path.open("rb") as handle:
        start = 8 + struct.unpack("<Q", handle.read(8))[0]
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            begin, stop = (int(v) for v in info["data_offsets"])
            digest.update(json.dumps([name, info.get("dtype"), info.get("shape")]).encode())
            handle.seek(start + begin)
            left = stop - begin
            while left > 0:
                block = handle.read(min(left, 1 << 22))
                if not block:
                    raise ValueError(f"{path} ends inside tensor {name}")
                digest.update(block)
                left -= len(block)
    value = digest.hexdigest()
    if stat.st_size >= HASH_CACHE_BYTES:
        from heartbench.content import _read_cache, _write_cache, cache_dir

        cache = _read_cache(cache_dir() / ADAPTER_HASH_CACHE)
        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        _write_cache(cache_dir() / ADAPTER_HASH_CACHE, cache)
    return value


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without torch; ValueError (with why) when
    the file is not a whole one: too short, a header beyond its end, tensors whose data
    runs past its end or stops short of it (truncated or appended to)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, shorter than a safetensors header")
        length = struct.unpack("<Q", head)[0]
        if length > min(size - 8, _MAX_HEADER):
            raise ValueError(f"its header says {length} bytes, the file has {size} (truncated?)")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"its header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    try:
        need = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                   default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ValueError("its header lacks tensor offsets") from None
    have = size - 8 - length
    if need != have:
        raise ValueError(f"its tensors need {need} bytes of data, the file has {have} "
                         f"({'truncated' if need > have else 'bytes appended'})")
    return header


def adapter_facts(path: str | Path) -> dict[str, Any]:
    """What a record stores about its adapter file: size, sha256, tensor names."""
    path = Path(path)
    header = safetensors_header(path)
    return {"file_bytes": path.stat().st_size, "sha256": adapter_sha256(path),
            "tensors": sorted(k for k in header if k != "__metadata__")}


def adapter_kept(record: dict) -> bool:
    """False when the record says its adapter was deliberately not kept
    (``adapter.kept = false``, e.g. to keep a clone lean): then nothing is verified."""
    adapter = record.get("adapter")
    return not (isinstance(adapter, dict) and adapter.get("kept") is False)


def adapter_problem(record: dict, record_file: str | Path) -> str | None:
    """Why the adapter of a done record (stored at ``record_file``) is not the one it ran
    with, or None: missing, truncated, not a safetensors file, another method's, other
    tensor names, other bytes (size and sha256, where the record stores them), or a record
    that names no adapter. Failed records and ``adapter.kept = false`` have nothing to check.

    Records from before the stored facts are verified on what their file says: whole,
    written by heartbench for the record's method, with a head, and tensor payloads of the
    sizes the record states (``stored_bytes``, ``head_bytes``)."""
    if record.get("status") != "done" or not adapter_kept(record):
        return None
    adapter = record.get("adapter")
    if not isinstance(adapter, dict):
        return "the record names no adapter (adapter is null); expected adapter.file, or " \
               "adapter.kept = false for an adapter deliberately not kept"
    name = adapter.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name:
        return f"adapter.file is {name!r}; expected a file name beside the record"
    path = Path(record_file).parent / name
    if not path.is_file():
        return f"adapter file {path} is {'not a file' if path.exists() else 'missing'}"
    size = path.stat().st_size
    if adapter.get("file_bytes") is not None and size != adapter["file_bytes"]:
        return (f"adapter file {path} has {size} bytes, the record says "
                f"{adapter['file_bytes']} (truncated or replaced)")
    try:
        header = safetensors_header(path)
    except (ValueError, OSError) as err:
        return f"adapter file {path} is not a whole safetensors file: {err}"
    method = (header.get("__metadata__") or {}).get("heartbench.method")
    if method != record.get("method"):
        return f"adapter file {path} holds method {method!r}, the record's is {record.get('method')!r}"
    names = sorted(k for k in header if k != "__metadata__")
    stored = adapter.get("tensors")
    if isinstance(stored, list) and names != sorted(stored):
        gone, extra = sorted(set(stored) - set(names)), sorted(set(names) - set(stored))
        return (f"adapter file {path} has other tensors than the record lists (missing: "
                f"{', '.join(gone[:3]) or 'none'}; not listed: {', '.join(extra[:3]) or 'none'})")
    if not any(n.startswith("head.") for n in names):
        return f"adapter file {path} holds no head tensors"
    for prefix, key in (("adapter.", "stored_bytes"), ("head.", "head_bytes")):
        held = sum(int(t["data_offsets"][1]) - int(t["data_offsets"][0])
                   for k, t in header.items() if k.startswith(prefix))
        if _is_int(adapter.get(key)) and held != adapter[key]:
            return (f"adapter file {path} holds {held} bytes of {prefix.rstrip('.')} tensors, "
                    f"the record says {key} = {adapter[key]}")
    if adapter.get("sha256") is not None:
        digest = adapter_sha256(path)
        if digest != adapter["sha256"]:
            return (f"adapter file {path} changed since its record was written (sha256 "
                    f"{digest[:12]}, the record says {str(adapter['sha256'])[:12]})")
    return None


def seal_adapter(record: dict, record_file: str | Path) -> dict | None:
    """``record`` with :data:`ADAPTER_FACTS` filled in from its adapter file, for a record
    written before they were stored; None when there is nothing to add (facts present,
    adapter not kept, not done) or the file does not verify (never seal a damaged file)."""
    adapter = record.get("adapter")
    if (record.get("status") != "done" or not adapter_kept(record)
            or not isinstance(adapter, dict) or all(k in adapter for k in ADAPTER_FACTS)
            or adapter_problem(record, record_file) is not None):
        return None
    facts = adapter_facts(Path(record_file).parent / adapter["file"])
    return {**record, "adapter": {**adapter, **facts}}


def done_adapter_problem(results_dir: str | Path, run: Any, record: dict) -> str | None:
    """:func:`adapter_problem` of ``run``'s record in ``results_dir``, worded for ``run``'s
    skip and ``status`` (a done run whose adapter fails it is not done: it trains again)."""
    problem = adapter_problem(record, record_path(results_dir, run.suite, run.run_id))
    return None if problem is None else f"{problem}: not done"
