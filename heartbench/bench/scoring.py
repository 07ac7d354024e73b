"""Responsiveness scoring (Heart-LoRA): the listeners' cost per step (timed inside the
listeners, and as the paired step-time difference), ``compute_mask`` + ``apply_mask``,
as a fraction of one training epoch of the paper's protocol (15 steps of batch 64,
extrapolated linearly in the batch from the measured step)."""

from __future__ import annotations

import time
from typing import Any

from heartbench.bench.cases import Workload, clone_backbone, make_step
from heartbench.bench.settings import Settings
from heartbench.bench.stats import (
    PROTOCOL_EPOCHS,
    PROTOCOL_STEPS_PER_EPOCH,
    extrapolate_step,
    median,
    rotate,
    scoring_fraction,
)
from heartbench.bench.timing import sync, timed


def _listening(method: Any, device: Any, total: list[float]) -> Any:
    """``listen(on)``: switch the listeners, timing each call into ``total[0]``."""

    def listen(on: bool) -> None:
        method.listen(on)
        if not on:
            return
        for module in method.modules.values():
            inner = module.listener

            def wrapped(w: Any, g: Any, inner: Any = inner) -> None:
                start = time.perf_counter()
                inner(w, g)
                sync(device)
                total[0] += time.perf_counter() - start
            module.listener = wrapped

    return listen


def scoring(settings: Settings, work: Workload) -> dict[str, Any]:
    import torch

    from heartbench.adapters import create_method

    device = settings.device
    torch.manual_seed(0)
    backbone = clone_backbone(work.template)
    method = create_method("heart_lora")
    method.attach(backbone)  # unmasked: scoring happens in the last warm-up epoch
    backbone.model.train()
    step, _ = make_step(backbone.model, method.trainable_parameters() + backbone.head_parameters(),
                        work.images, work.labels, device)
    listener_time = [0.0]
    listen = _listening(method, device, listener_time)
    method.on_train_start(PROTOCOL_EPOCHS, 10, PROTOCOL_STEPS_PER_EPOCH)
    method._reset_scores()
    step()
    t_on, t_off, per_step = [], [], []
    for r in range(settings.reps):
        for mode in rotate([True, False], r):
            listen(mode)
            before = listener_time[0]
            t = median(timed(step, device) for _ in range(settings.steps))
            (t_on if mode else t_off).append(t)
            if mode:
                per_step.append((listener_time[0] - before) / settings.steps)
    listen(False)
    mask_times = []
    for _ in range(max(5, settings.reps)):
        start = time.perf_counter()
        method.apply_mask(method.compute_mask())
        sync(device)
        mask_times.append(time.perf_counter() - start)
    listener_s = median(per_step) or 0.0
    mask_s = median(mask_times) or 0.0
    step_s = median(t_off)
    step_64 = extrapolate_step(step_s, settings.batch)
    paired = median(a - b for a, b in zip(t_on, t_off))
    return {
        "listener_s_per_step": listener_s, "paired_step_diff_s": paired,
        "step_s_listening": median(t_on), "step_s": step_s,
        "compute_and_apply_mask_s": mask_s,
        "step_s_at_batch_64": step_64,
        "epoch_s_at_batch_64": PROTOCOL_STEPS_PER_EPOCH * step_64,
        "fraction_of_epoch": scoring_fraction(listener_s, mask_s, step_64),
        "fraction_of_run": scoring_fraction(listener_s, mask_s, step_64) / PROTOCOL_EPOCHS,
        "note": (f"one scoring epoch = {PROTOCOL_STEPS_PER_EPOCH} steps with listeners +"
                 " compute_mask + apply_mask; epoch = 15 steps of batch 64, step time"
                 f" extrapolated linearly from batch {settings.batch}; listener time measured"
                 " inside the listeners (the paired step difference is noisier)"),
    }
