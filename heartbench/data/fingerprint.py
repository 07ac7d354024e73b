"""A task's data fingerprint: its list files' bytes and the size of every listed image.

Shared by ``data verify`` (the JSON fingerprint of a copy) and ``run`` (stored in each
record, so a corrected copy at the same path reruns while the same copy moved elsewhere
does not). The data root's path is not part of it; image contents are represented by
their sizes, which a stat gives without reading the file (a JPEG re-encoded or replaced by
another image practically always changes size; ``verify --deep`` hashes contents).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from heartbench.data.tasks import TaskInfo, is_fewshot, resolve_task

FEWSHOT_LIST_PREFIXES = ("train_meta.list.num_shot_", "val_meta.list", "test_meta.list")


def list_paths(root: str | os.PathLike, benchmark: str, info: TaskInfo
               ) -> tuple[Path, list[Path]]:
    """(folder images are resolved against, the task's list files that exist, sorted)."""
    if is_fewshot(benchmark):
        from heartbench.data.fewshot import dataset_dir

        folder = dataset_dir(root, info)
        notes = folder / "annotations"
        names = sorted(os.listdir(notes)) if notes.is_dir() else []
        files = [notes / n for n in names if n.startswith(FEWSHOT_LIST_PREFIXES)]
        return folder / "images", files
    from heartbench.data.vtab import VTAB_SPLITS, task_dir

    folder = task_dir(root, info)
    return folder, [folder / f"{s}.txt" for s in sorted(VTAB_SPLITS)
                    if (folder / f"{s}.txt").is_file()]


def listed_paths(text: str) -> Iterator[str]:
    """The image path of every non-empty line (``<path> <label>``; paths may hold spaces)."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            yield line.rsplit(maxsplit=1)[0]


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def file_digest(list_file: Path, base: Path) -> str:
    """sha256 of one list file's name and bytes and of its listed images' sizes."""
    data = list_file.read_bytes()
    h = hashlib.sha256(list_file.name.encode() + b"\0" + data + b"\0")
    text = data.decode("utf-8", errors="replace")
    sizes = ",".join(str(_size(base / rel)) for rel in listed_paths(text))
    h.update(sizes.encode())
    return h.hexdigest()


def task_fingerprint(root: str | os.PathLike, benchmark: str, task: str) -> str:
    """16 hex digits that change when any list file or any listed image's size changes."""
    return info_fingerprint(root, benchmark, resolve_task(benchmark, task))


def info_fingerprint(root: str | os.PathLike, benchmark: str, info: TaskInfo) -> str:
    """:func:`task_fingerprint` of a TaskInfo (a task of one's own need not be declared)."""
    base, files = list_paths(root, benchmark, info)
    h = hashlib.sha256(f"{benchmark}/{info.name}\0".encode())
    for path in files:
        h.update(file_digest(path, base).encode())
    return h.hexdigest()[:16]


def copy_fingerprint(per_task: dict[str, str]) -> str:
    """One fingerprint for a whole copy from its tasks' fingerprints."""
    h = hashlib.sha256()
    for task in sorted(per_task):
        h.update(f"{task}={per_task[task]};".encode())
    return h.hexdigest()[:16]
