"""``--precision fp32,bf16``: every method's training step in each precision the trainer
offers (``train.precision``; bf16 = ``torch.autocast``), timed interleaved per method."""

from __future__ import annotations

from typing import Any

from heartbench.bench.cases import Workload, clone_backbone, make_step, method_overrides
from heartbench.bench.settings import Settings
from heartbench.bench.stats import median, paired_ratio, rotate
from heartbench.bench.timing import timed


def _steps(work: Workload, device: Any, name: str, precisions: list[str]) -> dict[str, Any]:
    import torch

    from heartbench.adapters import create_method

    steps = {}
    for precision in precisions:
        torch.manual_seed(0)
        backbone = clone_backbone(work.template)
        method = create_method(name, method_overrides(name, work.template))
        method.attach(backbone)
        method.nominal_state()
        backbone.model.train()
        params = method.trainable_parameters() + backbone.head_parameters()
        steps[precision], _ = make_step(backbone.model, params, work.images, work.labels,
                                        device, precision)
        steps[precision]()  # warm-up (autocast caches, allocator)
    return steps


def precision_steps(settings: Settings, work: Workload, methods: list[str]) -> dict[str, Any]:
    """Per method: median step seconds per precision and each one's paired ratio to the
    first precision listed."""
    precisions = settings.precisions
    out: dict[str, Any] = {}
    for name in methods:
        steps = _steps(work, settings.device, name, precisions)
        times: dict[str, list[float | None]] = {p: [] for p in precisions}
        for r in range(settings.reps):
            for p in rotate(precisions, r):
                times[p].append(median(timed(steps[p], settings.device)
                                       for _ in range(settings.steps)))
        first = precisions[0]
        out[name] = {"step_s": {p: median(t) for p, t in times.items()},
                     f"ratio_to_{first}": {p: paired_ratio(t, times[first])
                                           for p, t in times.items()}}
        settings.log(f"  {name:<24} " + "  ".join(
            f"{p} {out[name]['step_s'][p] * 1000:.0f} ms" for p in precisions))
    return out
