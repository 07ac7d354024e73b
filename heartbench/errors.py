"""One exception type for user mistakes.

The command line turns a :class:`UserError` into one line on stderr and exit code 2.
Anything else that escapes is a bug in heartbench and may show a traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """A mistake in what the user gave us (a file, a key, a value, a path)."""


class MissingData(UserError):
    """Data that is not there at all (a root, a task folder, a list file), as opposed to a
    broken copy: ``run`` adds the command that makes it."""


class Problems(UserError):
    """Several user mistakes found at once (``run``'s pre-flight): the command line prints
    each of ``lines`` as its own error line, then exits 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def error_lines(err: UserError) -> list[str]:
    """The lines an error prints: one, or one per problem."""
    return list(getattr(err, "lines", None) or [str(err)])


def closest(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def one_of(what: str, value: object, choices: Iterable[str]) -> UserError:
    """An error for a value outside a known set, listing the set and the closest name."""
    choices = sorted(choices)
    return UserError(
        f"unknown {what} {value!r}{closest(str(value), choices)}; expected one of: {', '.join(choices)}"
    )


def message(err: BaseException) -> str:
    """``err``'s message on one line. An error raised in a DataLoader worker reaches the main
    process re-raised with the worker's whole traceback as its message ("Caught X in
    DataLoader worker process 0. Original Traceback ..."): it ends with the original
    ``module.Type: message`` (what follows the traceback's last indented line), of which
    the message is kept."""
    text = str(err).strip()
    if "Original Traceback" in text:
        lines = text.split("Original Traceback", 1)[1].splitlines()[1:]
        start = 1 + max((i for i, line in enumerate(lines) if line[:1].isspace()), default=-1)
        start = min(start, len(lines) - 1)
        head, sep, rest = lines[start].partition(": ")
        first = rest if sep and " " not in head else lines[start]
        text = " ".join([first, *lines[start + 1:]])
    return " ".join(text.split())


def what_is(path: Path) -> str:
    """What ``path`` is, said as the end of "X ...": for a message about a path that is not
    what was expected ("does not exist", "is a folder", "is a FIFO", "is a symlink loop")."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as err:
        if path.is_symlink():
            target = os.readlink(path)
            if err.errno == errno.ELOOP:
                return f"is a symlink loop (-> {target})"
            return f"is a dangling symlink (-> {target})"
        if err.errno == errno.ELOOP:
            return "lies under a symlink loop"
        if err.errno in (errno.EACCES, errno.EPERM):
            return "cannot be examined (permission denied)"
        if err.errno == errno.ENOTDIR:
            return "does not exist (a parent is a file, not a folder)"
        return "does not exist"
    kinds = ((stat.S_ISDIR, "is a folder"), (stat.S_ISREG, "is a file"),
             (stat.S_ISFIFO, "is a FIFO (named pipe)"), (stat.S_ISCHR, "is a character device"),
             (stat.S_ISBLK, "is a block device"), (stat.S_ISSOCK, "is a socket"))
    return next((text for test, text in kinds if test(mode)), "is not a regular file")
