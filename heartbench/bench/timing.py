"""Timing (wall and CPU seconds), peak memory and FLOPs of a training step.

Peak memory is the largest number of bytes held by live tensors during a step (the model's
parameters and buffers, optimiser state, gradients and activations): on CUDA
``max_memory_allocated`` above the allocation before the step plus the case's resident
tensors; on the CPU the same from the profiler's allocation events.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from heartbench.bench.cases import Case, CaseSet, Workload
from heartbench.bench.settings import Settings
from heartbench.bench.stats import median, peak_from_events, schedule

# Lines the profiler's C++ side (Kineto) writes straight to file descriptor 2 on every
# start and stop, e.g. "USDT:2026-11-28 23:04:14 9485:9485 SyncActivityProfilerHandler.cpp:39]
# profiler_start", and, on a machine without a GPU, "ERROR:... DeviceProperties.cpp:56]
# gpuGetDeviceCount failed with code 35". Python cannot intercept them (they bypass
# sys.stderr), so :func:`quiet_profiler` catches the descriptor itself.
_KINETO_LINE = re.compile(r"^[A-Z]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \w+\.cpp:\d+\] ")


@contextlib.contextmanager
def quiet_profiler() -> Iterator[None]:
    """Run a profiled region with fd 2 caught; pass on every line but Kineto's log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not _KINETO_LINE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def timed_both(fn: Callable[[], Any], device: Any) -> tuple[float, float | None]:
    """(wall seconds, process CPU seconds over all threads; None on CUDA).

    On a shared CPU the wall time also counts waiting for a core; the CPU time counts only
    work, so its ratios are the steadier check of an adapter's own cost.
    """
    sync(device)
    cpu = time.process_time()
    start = time.perf_counter()
    fn()
    sync(device)
    wall = time.perf_counter() - start
    return wall, (time.process_time() - cpu if device.type == "cpu" else None)


def _storages(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None or not hasattr(t, "untyped_storage"):
            continue
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def resident_tensors(case: Case, images: Any, labels: Any) -> list[Any]:
    """What a case holds between steps: weights, buffers, grads, optimiser state, batch."""
    model = case.model
    tensors = [*model.parameters(), *model.buffers(), images, labels]
    tensors += [p for p in case.params]
    tensors += [p.grad for p in case.params if p.grad is not None]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if case.optimizer is not None:
        for state in case.optimizer.state.values():
            tensors += [v for v in state.values() if hasattr(v, "untyped_storage")]
    return tensors


def profile_step(case: Case, images: Any, labels: Any, device: Any) -> None:
    """One step under the memory profiler and the FLOP counter: fills peak, resident, flops."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # Free last step's gradients first (the step's zero_grad would): the profiler does not
    # see frees of blocks allocated before it started, which would inflate the peak.
    case.optimizer.zero_grad(set_to_none=True)
    resident = _storages(resident_tensors(case, images, labels))
    case.resident_bytes = resident
    counter = FlopCounterMode(display=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with counter:
            case.step()
        torch.cuda.synchronize(device)
        case.peak_bytes = resident + torch.cuda.max_memory_allocated(device) - before
    else:
        from torch.profiler import ProfilerActivity, profile

        with quiet_profiler(), profile(activities=[ProfilerActivity.CPU],
                                       profile_memory=True) as prof, counter:
            case.step()
        case.peak_bytes = resident + cpu_peak_delta(prof)
    case.flops = float(counter.get_total_flops())


def cpu_peak_delta(prof: Any) -> int:
    """Peak bytes allocated above the start of a profiled region, from its memory events."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    return peak_from_events(e.nbytes() for e in events)


def warm_up(found: CaseSet, device: Any) -> None:
    for case in found.cases.values():
        case.step()
    sync(device)


def profile_all(settings: Settings, found: CaseSet, work: Workload) -> None:
    for name, case in found.cases.items():
        profile_step(case, work.images, work.labels, settings.device)
        settings.log(f"  {name:<24} peak {case.peak_bytes / 2**20:9.1f} MiB"
                     f"  {case.flops / 1e9:9.1f} GFLOP")


def time_all(settings: Settings, found: CaseSet) -> None:
    """Every case's step, ``steps`` times per repetition, in :func:`schedule`'s order."""
    order = schedule([found.groups[k] for k in sorted(found.groups)], settings.reps)
    for r, names in enumerate(order):
        for name in names:
            case = found.cases[name]
            both = [timed_both(case.step, settings.device) for _ in range(settings.steps)]
            case.times.append(median(w for w, _ in both))
            case.cpu_times.append(median(c for _, c in both))
        settings.log(f"  rep {r + 1}/{settings.reps} done ({settings.elapsed():.0f} s)")


def write_profile(settings: Settings, found: CaseSet, name: str) -> None:
    """``--profile CASE``: a torch.profiler op table of one step of that case."""
    from torch.profiler import ProfilerActivity, profile

    from heartbench.errors import UserError

    if name not in found.cases:
        raise UserError(f"--profile: no case {name!r}; cases: {', '.join(found.cases)}")
    with quiet_profiler(), profile(activities=[ProfilerActivity.CPU]) as prof:
        found.cases[name].step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    settings.out.mkdir(parents=True, exist_ok=True)
    safe = name.replace(":", "_").replace("[", "_").replace("]", "").replace(",", "")
    (settings.out / f"profile_{safe}.txt").write_text(table, encoding="utf-8")
