"""One exception type for user mistakes.

The command line turns a :class:`UserError` into one line on stderr and exit code 2.
Anything else that escapes is a bug in heartbench and may show a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in what the user gave us (a file, a key, a value, a path)."""


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
