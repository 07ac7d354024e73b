"""Writing a task all or nothing: every task is written into a hidden temporary folder
beside its final place and renamed into place when complete, so an interrupted command
leaves no task folder (a folder that exists is a whole task)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def task_folder(out: str | os.PathLike, name: str) -> Iterator[Path]:
    """Yield a temporary parent folder: write the task into ``<yielded>/<name>``; on a
    clean exit it becomes ``out/<name>`` (replacing an older copy only then), on an error
    or interrupt it is removed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out))
    try:
        yield tmp
        final = out / name
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out))
            os.replace(final, old / name)
            os.replace(tmp / name, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / name, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
