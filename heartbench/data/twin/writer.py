"""Writing a task all or nothing: every task is written into a hidden temporary folder
beside its final place and renamed into place when complete, so an interrupted command
leaves no task folder (a folder that exists is a whole task).

Used by every data writer: the twins, the synthetic benchmark, the full-size rehearsal
data and ``data prepare``. The hidden folder is ``<out>/.<name>.partial-XXXX``; an error,
Ctrl-C or (through the ``data`` command's handler) SIGTERM removes it. A writer killed
outright (SIGKILL, a node lost) cannot, so the next write of the same task removes such a
stale folder first. A folder is stale when the process named in its owner file
(``.writer.json``: host and pid) is no longer running on this host; when it was made on
another host, once it is older than a day; when it has no owner file (an older
heartbench's), once it is a minute old. A live writer's folder is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from heartbench.errors import UserError, what_is
from heartbench.processes import pid_alive

OWNER_FILE = ".writer.json"  # in the hidden folder, beside the task: never part of it
UNOWNED_STALE_S = 60.0  # a folder without owner file: left by an older heartbench
FOREIGN_STALE_S = 24 * 3600.0  # another host's writer: its liveness cannot be checked
_REPLACED = ".replaced"  # where the older copy waits while the new one is renamed in


@contextlib.contextmanager
def task_folder(out: str | os.PathLike, name: str) -> Iterator[Path]:
    """Yield a temporary parent folder: write the task into ``<yielded>/<name>``; on a
    clean exit it becomes ``out/<name>`` (replacing an older copy only then), on an error
    or interrupt it is removed. Stale hidden folders of ``name`` are removed first."""
    out = Path(out)
    final = out / name
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise UserError(f"{final} {what_is(final)} where task {name!r} is written; expected"
                        " its folder or nothing (move it away)")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out))
    try:
        (tmp / OWNER_FILE).write_text(
            json.dumps({"host": socket.gethostname(), "pid": os.getpid()}), encoding="utf-8")
        yield tmp
        final, aside = out / name, tmp / _REPLACED
        try:
            if final.exists():
                os.replace(final, aside)
            os.replace(tmp / name, final)
        except BaseException:  # never lose the older copy: put it back
            if aside.exists() and not final.exists():
                os.replace(aside, final)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(out: Path, name: str) -> list[Path]:
    """Remove the hidden folders of ``name`` under ``out`` that no live writer owns; return
    them. Also the ``.<name>.old-*`` folders of older heartbench versions."""
    removed = []
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for folder in sorted(out.glob(pattern)):
            if folder.is_dir() and not folder.is_symlink() and _stale(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def _stale(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        host, pid = str(owner["host"]), int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        # No owner file: an older heartbench's folder, or one created this instant (its
        # owner file is written right after): only the former is a minute old.
        return _age(folder) > UNOWNED_STALE_S
    if host != socket.gethostname():
        return _age(folder) > FOREIGN_STALE_S
    return pid != os.getpid() and not pid_alive(pid)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
