"""The closing lines of ``bench``: what its targets say, in words a newcomer can act on.

A target is a speed or memory goal (a method's training step or peak memory against its
limit, the same frozen backbone with only a trainable gate at the sites it adapts;
heartbench against PEFT; merged inference; scoring, ``tables`` and planning times). It is
not a correctness check (the tests check correctness), so a missed target means slower
than the goal on this machine, not that something is broken. Pure: no torch.
"""

from __future__ import annotations

from typing import Any


def _value(target: dict[str, Any]) -> str:
    value = target.get("value")
    return "?" if value is None else f"{value:.3f}"


def verdict(targets: list[dict[str, Any]], meta: dict[str, Any], strict: bool = False
            ) -> list[str]:
    """The closing lines for ``targets`` (rows of ``report.targets``) measured under
    ``meta`` (the report's machine, threads, load average, quick)."""
    met = [t for t in targets if t.get("met") is True]
    missed = [t for t in targets if t.get("met") is False]
    unmeasured = [t for t in targets if t.get("met") is None]
    load = meta.get("load_avg") or []
    where = (f"{meta.get('threads', '?')} threads, load average"
             f" {load[0]:.1f}" if load else f"{meta.get('threads', '?')} threads")
    extra = (f"; {len(unmeasured)} not measured here: "
             + ", ".join(t["key"] for t in unmeasured)) if unmeasured else ""
    if not missed:
        return [f"verdict: OK: the bench ran without error and all {len(met)} measured speed"
                f"/memory targets were met ({where}){extra}."]
    named = ", ".join(f"{t['key']} {_value(t)} (target {t['target']})" for t in missed)
    lines = [
        f"verdict: the bench ran without error; {len(missed)} of {len(met) + len(missed)}"
        f" speed/memory targets were missed on this machine ({where}): {named}{extra}.",
        "  A missed target means slower or bigger than a goal here, not a wrong result: a target"
        " compares a method's step time or memory with its limit (the same frozen backbone"
        " with only a trainable gate where the method adapts it); the tests check"
        " correctness.",
    ]
    if meta.get("quick"):
        lines.append("  --quick times a tiny model, on which an adapter's own small matmuls"
                     " are a large share of a step: its ratios do not carry over to ViT-B"
                     " (docs/performance.md).")
    threads = meta.get("threads")
    if load and isinstance(threads, int) and load[0] > threads:
        lines.append("  The machine was busy (load average above the threads bench used):"
                     " timings move; rerun on an idle machine with more --reps before reading"
                     " much into them.")
    lines.append("  Exit code 1 with --strict." if strict else
                 "  Exit code 0; --strict exits 1 on a missed target.")
    return lines


def exit_code(targets: list[dict[str, Any]], strict: bool) -> int:
    """1 with ``strict`` when a target was missed, else 0."""
    return 1 if strict and any(t.get("met") is False for t in targets) else 0
