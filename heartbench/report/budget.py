"""The tuning budget of a measured row: how many configurations were searched per task, and
on which split the choice was made. One place, used by every table and figure.

A cell (one row, one task: :class:`heartbench.report.select.Cell`) chose among
``n_configs`` stored configurations (on test, or on val200 when every record selected on
val), and each of those may itself have searched a grid on val200 before its final training
(eval_protocol "val": the record's ``search``). So a task's budget is ``n_configs`` times the
inner search (at least 1), and its split is "val" when the inner search or the choice was
on val200, "test" when the choice was on the test set (several configurations, or the
best-of-test protocol picking epochs on test), and nothing when one configuration ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

BUDGET_NOTE = ("[N/split] after a measured row (a legend entry in a figure): the "
               "configurations searched per task (N; a range where tasks differ) and the split the choice was made on (test: the test set, "
               "as the paper does; val: val200 after training on train800, then retrained on "
               "train800val200 and tested once); [1]: one configuration, nothing chosen.")


def searched(record: dict) -> int:
    """Configurations the record's run trained before its final one (its val200 search)."""
    search = record.get("search") or {}
    if record.get("eval_protocol") != "val" or not search:
        return 0
    return math.prod(len(v) for v in search.values())


def cell_budget(cell: Any) -> tuple[int, str]:
    """(configurations searched for this task, split chosen on: "val", "test" or "")."""
    inner = max((searched(r) for r in cell.records), default=0)
    count = cell.n_configs * max(inner, 1)
    if inner or cell.selected_on == "val":
        return count, "val"
    if cell.selected_on == "test" or any(r.get("eval_protocol") == "best_of_test"
                                          for r in cell.records):
        return count, "test"
    return count, ""


def budget_text(cells: Iterable[Any]) -> str:
    """'20/test', '1-20/test', '40/val', '1' for the cells of one row (or curve)."""
    budgets = [cell_budget(c) for c in cells]
    if not budgets:
        return ""
    counts = sorted({n for n, _ in budgets})
    splits = sorted({s for _, s in budgets if s})
    count = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{count}/{'+'.join(splits)}" if splits else count


def budget_mark(cells: Iterable[Any]) -> str:
    """The LaTeX mark after a row name: `` {\\scriptsize [20/test]}``."""
    text = budget_text(cells)
    return f" {{\\scriptsize [{text}]}}" if text else ""
