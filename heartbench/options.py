"""One grammar for every command: the same option for the same thing.

* tasks (or few-shot datasets): ``--tasks a,b``
* methods: ``--methods a,b``
* which runs of a suite: ``--only PATTERN``
* an output folder: ``--out DIR``; the records read: ``--results-dir DIR``
* benchmarks: spelled as in suites (``vtab_mini``, ``fewshot_mini``)

An old spelling keeps working and says on stderr what it is now (:func:`old_option`,
:func:`benchmark_name`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def note(text: str) -> None:
    """A note on stderr (never stdout, which scripts may read)."""
    print(f"note: {text}", file=sys.stderr)


class _OldSpelling(argparse.Action):
    """Stores into the new option's dest and notes the new spelling on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "",
                 **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        note(f"{option_string} is now spelled {self.new} (the old spelling still works)")
        setattr(namespace, self.dest, values)


def old_option(parser: argparse.ArgumentParser, old: str, new: str, dest: str) -> None:
    """Accept ``old`` as ``new`` (hidden from --help), with a note when used."""
    parser.add_argument(old, dest=dest, action=_OldSpelling, new=new, help=argparse.SUPPRESS)


def add_tasks(parser: argparse.ArgumentParser, help_text: str = "comma-separated subset of"
              " tasks (default: all)", old: tuple[str, ...] = ()) -> None:
    """``--tasks a,b`` (``old``: earlier spellings of it, still accepted)."""
    parser.add_argument("--tasks", default=None, metavar="A,B", help=help_text)
    for spelling in old:
        old_option(parser, spelling, "--tasks", "tasks")


def split_names(text: str | None) -> list[str] | None:
    """``a, b,,c`` -> ['a', 'b', 'c']; None or empty -> None."""
    names = [t for t in (s.strip() for s in (text or "").split(",")) if t]
    return names or None


def benchmark_name(name: str) -> str:
    """A benchmark as spelled in suites; a hyphenated spelling is accepted with a note."""
    if "-" in name:
        fixed = name.replace("-", "_")
        note(f"benchmark {name!r} is spelled {fixed!r} (as in suites); the old spelling"
             " still works")
        return fixed
    return name
