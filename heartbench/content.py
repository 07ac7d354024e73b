"""What a run's result depends on beyond its configuration: the data's and weights' content.

``run_id`` hashes the configuration only (``RunSpec.identity``), so that the records
already stored keep their ids. The content is stored beside it, in ``RunSpec.content``
and in every record: ``{"data": <task fingerprint>, "weights": <sha256 of the file>}``.
A finished record whose stored content differs from the current one is not done: the
run is repeated and its record replaced (one line says why). Records without a stored
content (written before this existed) stay valid. The data root's path is in neither
value, so the same copy moved to another folder still finds its finished runs.

Hashing a 330 MB ViT-B checkpoint takes about a second; the hash is cached in
``<cache>/file-sha256.json`` keyed by absolute path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

CACHE_ENV = "HEARTBENCH_CACHE"  # one cache folder: weight hashes here, the twin's downloads


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "heartbench"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only costs the next run a re-hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".file-sha256.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached by (absolute path, size, mtime_ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache_file = cache_dir() / "file-sha256.json"
    cache = _read_cache(cache_file)
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("size") == stat.st_size and \
            hit.get("mtime_ns") == stat.st_mtime_ns and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_cache(cache_file, cache)
    return digest


def with_content(suite: Any, runs: list[Any]) -> list[Any]:
    """``runs`` with ``content`` filled in: one data fingerprint per task, one weights hash."""
    from heartbench.data.fingerprint import task_fingerprint

    weights = suite.backbone.get("weights")
    weights_hash = file_sha256(weights) if weights not in (None, "timm") else None
    data = {task: task_fingerprint(suite.data_root, suite.benchmark, task)
            for task in sorted({r.task for r in runs})}
    return [replace(r, content={"data": data[r.task], "weights": weights_hash}) for r in runs]


def stale_reason(record: dict[str, Any], run: Any) -> str | None:
    """Why a stored record no longer matches ``run``'s data or weights, or None.

    Only values known on both sides are compared: old records, and runs whose content was
    not computed (inside a worker given an old spec), are taken as matching.
    """
    stored = record.get("content") or {}
    current = getattr(run, "content", None) or {}
    if not isinstance(stored, dict):
        return None
    for key, what in (("data", f"the data of task {run.task}"), ("weights", "the weights file")):
        old, new = stored.get(key), current.get(key)
        if old and new and old != new:
            return f"{what} changed since it ran ({key} {old[:12]} -> {new[:12]})"
    return None
