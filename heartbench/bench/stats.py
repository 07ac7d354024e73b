"""The benchmark's arithmetic: medians, paired ratios, the interleaving schedule,
extrapolations and target checks. Pure functions (no torch), unit-tested directly."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

# The paper's protocol (Table 9): batch 64, 1,000 training images -> 15 steps (drop_last).
PROTOCOL_BATCH = 64
PROTOCOL_STEPS_PER_EPOCH = 15
PROTOCOL_EPOCHS = 100


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None if there are none."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def paired_ratio(num: Sequence[float | None], den: Sequence[float | None]) -> float | None:
    """Median over repetitions of num[r] / den[r].

    Cases are timed in the same repetition close together, so a per-repetition ratio
    cancels slow drifts in machine load that a ratio of medians would keep.
    """
    return median(ratio(a, b) for a, b in zip(num, den))


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` rotated left by k (k may exceed the length)."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def schedule(groups: Sequence[Sequence[str]], reps: int) -> list[list[str]]:
    """The order cases run in, per repetition.

    A group is a limit and the cases compared with it: they stay adjacent, so their ratio
    compares neighbours in time. Groups, and the cases inside each group, rotate by one
    position per repetition, so no case always runs first (warm caches) or last.
    """
    order = []
    for r in range(reps):
        order.append([c for g in rotate(list(groups), r) for c in rotate(list(g), r)])
    return order


def peak_from_events(deltas: Iterable[int]) -> int:
    """Peak of the running sum of allocation deltas (bytes; frees negative), at least 0."""
    current = peak = 0
    for d in deltas:
        current += d
        peak = max(peak, current)
    return peak


def extrapolate_step(step_s: float, batch: int, to_batch: int = PROTOCOL_BATCH) -> float:
    """Step time at ``to_batch`` assuming time linear in the batch (compute-bound steps)."""
    return step_s * to_batch / batch


def scoring_fraction(listener_s_per_step: float, mask_s: float, step_s_at_protocol: float,
                     steps_per_epoch: int = PROTOCOL_STEPS_PER_EPOCH) -> float:
    """Extra time of a scoring epoch (listeners on every step, then the mask) / one epoch."""
    epoch = steps_per_epoch * step_s_at_protocol
    return (steps_per_epoch * listener_s_per_step + mask_s) / epoch


def suite_gpu_hours(runs: int, step_gpu_s: float, eval_gpu_s: float,
                    epochs: int = PROTOCOL_EPOCHS,
                    steps_per_epoch: int = PROTOCOL_STEPS_PER_EPOCH) -> float:
    """GPU hours of ``runs`` runs: epochs x steps of training plus one test evaluation each.

    ``eval_gpu_s`` is the test evaluation of one run, averaged over the runs' tasks.
    """
    return runs * (epochs * steps_per_epoch * step_gpu_s + eval_gpu_s) / 3600.0


def check_target(key: str, what: str, value: float | None, op: str, bound: float
                 ) -> dict[str, Any]:
    """One target row: met is None when the value could not be measured."""
    met = None if value is None else (value <= bound if op == "<=" else value >= bound)
    return {"key": key, "what": what, "value": value, "target": f"{op} {bound:g}", "met": met}
