"""The learning-rate schedule: timm's CosineLRScheduler, stepped per epoch or per step.

Per epoch (the default; Table 9 and the reference loops): ``train.schedule_step =
"reference"`` steps as PETL-ViT / FacT / RepAdapter do, ``scheduler.step(ep)`` after epoch
``ep``, so epoch ``e >= 1`` trains at the schedule's value at ``t = e - 1`` and epochs 0 and
1 both at ``warmup_lr_init``; ``"next_epoch"`` (heartbench's stepping before the key, the
committed records') trains epoch ``e`` at ``t = e``. Either way the warm-up rises in
whole-epoch stairs.

Per step (``train.warmup_per_step = true``, the twins): the same cosine with warm-up,
counted in optimiser steps (``t_initial = epochs * S``, ``warmup_t = warmup_epochs * S``
for ``S`` steps per epoch), and step ``g`` (0-based over the run) trains at the value at
``t = g + 1``: the warm-up rises linearly from ``warmup_lr_init`` and its steps train at
``lr * k / W`` (k = 1 .. W-1) before the cosine takes over, so a one-epoch warm-up of a
short twin run really trains the adapters before Heart-LoRA reads its scores.

Legacy (:data:`LEGACY_TRAIN`): records stored before ``warmup_per_step`` and
``schedule_step`` existed stepped per epoch with ``next_epoch``; a key is left out of a run's
identity while it has that value. The checks at the end run at planning time.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from heartbench.errors import UserError

# Train keys added after records were stored, with the value that gives the old behaviour.
LEGACY_TRAIN: dict[str, Any] = {"warmup_per_step": False, "schedule_step": "next_epoch"}


def per_step(train: dict[str, Any]) -> bool:
    """Whether the schedule is stepped per optimiser step (else per epoch)."""
    return bool(train.get("warmup_per_step", LEGACY_TRAIN["warmup_per_step"]))


def steps_per_epoch(images: int, batch_size: int, max_train_batches: int = 0) -> int:
    """Training batches per epoch as the trainer's loader gives them (drop_last when the split
    holds at least one batch), capped by ``max_train_batches`` (0: no cap)."""
    steps = images // batch_size if images >= batch_size else (1 if images > 0 else 0)
    return min(steps, max_train_batches) if max_train_batches else steps


def make_scheduler(optimizer: Any, train: dict[str, Any], steps: int) -> Any:
    """The run's scheduler, already at the first step's learning rate."""
    from timm.scheduler import CosineLRScheduler

    if not per_step(train):
        return CosineLRScheduler(optimizer, t_initial=train["epochs"],
                                 warmup_t=train["warmup_epochs"],
                                 warmup_lr_init=train["warmup_lr_init"], lr_min=train["min_lr"])
    scheduler = CosineLRScheduler(optimizer, t_initial=train["epochs"] * steps,
                                  warmup_t=train["warmup_epochs"] * steps,
                                  warmup_lr_init=train["warmup_lr_init"],
                                  lr_min=train["min_lr"], t_in_epochs=False)
    scheduler.step_update(1)
    return scheduler


def after_step(scheduler: Any, train: dict[str, Any], epoch: int, index: int, steps: int
               ) -> None:
    """After optimiser step ``index`` of ``epoch``: per step, set the next step's lr."""
    if per_step(train):
        scheduler.step_update(epoch * steps + index + 2)


def before_epoch(scheduler: Any, train: dict[str, Any], epoch: int, steps: int) -> None:
    """Before ``epoch``'s first step: per step, its lr (a resumed run starts here)."""
    if per_step(train):
        scheduler.step_update(epoch * steps + 1)


def after_epoch(scheduler: Any, train: dict[str, Any], epoch: int) -> None:
    """After ``epoch`` (0-based), per epoch: ``scheduler.step(epoch)`` as the reference loops
    do (``train.schedule_step = "reference"``: epochs 0 and 1 both train at warmup_lr_init),
    or ``step(epoch + 1)`` (``"next_epoch"``, heartbench's stepping before the key; a train
    dict without the key is one of those records). Per step, the steps set the lr."""
    if not per_step(train):
        mode = train.get("schedule_step", LEGACY_TRAIN["schedule_step"])
        scheduler.step(epoch if mode == "reference" else epoch + 1)


def planned_lrs(train: dict[str, Any], steps: int, count: int, base_lr: float | None = None
                ) -> list[float]:
    """The learning rates of the run's first ``count`` optimiser steps, from the same scheduler
    the trainer builds (a dummy parameter; ``base_lr`` defaults to ``train["lr"]``)."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=train["lr"] if base_lr is None else base_lr)
    scheduler = make_scheduler(optimizer, train, steps)
    lrs: list[float] = []
    for epoch in range(train["epochs"]):
        before_epoch(scheduler, train, epoch, steps)
        for index in range(steps):
            if len(lrs) == count:
                return lrs
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            after_step(scheduler, train, epoch, index, steps)
        after_epoch(scheduler, train, epoch)
    return lrs


# ---------------------------------------------------------------------------
# Checks at planning time (suite.load_suite): a method's schedule needs, before any job
# ---------------------------------------------------------------------------
def check_method_schedule(path: Path, where: str, name: str, config: dict[str, Any],
                    search: dict[str, list[Any]], train: dict[str, Any]) -> None:
    """A method's own schedule check (e.g. Heart-LoRA needs a warm-up epoch to score heads),
    for the config and every point it will search: at load time, not in a worker."""
    from heartbench.adapters import create_method

    points = [dict(zip(search, combo)) for combo in itertools.product(*search.values())]
    for point in points or [{}]:
        method = create_method(name, {**config, **point})
        check = getattr(method, "check_schedule", None)
        if check is None:
            return
        try:
            check(train["epochs"], train["warmup_epochs"])
        except UserError as err:
            raise UserError(f"{path}: {where}: {name}: {err}") from None


# Training images per split where a benchmark fixes them (VTAB-1K and its twin: train800val200,
# train800 for a val search); few-shot: shots x classes; synth: not planned (a code check).
VTAB_TRAIN_IMAGES = {"train": 1000, "search_train": 800}


def planned_steps(spec: Any, split: str) -> int | None:
    """Optimiser steps per epoch of ``spec`` on ``split`` ('train' or 'search_train'), or None
    where the benchmark does not fix its training-set size."""
    if spec.shots is not None:
        images = spec.shots * spec.num_classes
    elif spec.benchmark in ("vtab1k", "vtab_mini"):
        images = VTAB_TRAIN_IMAGES[split]
    else:
        return None
    t = spec.train
    return steps_per_epoch(images, t["batch_size"], t["max_train_batches"])


# Benchmarks whose runs must train a method before it reads what it needs (the CPU twins,
# whose short schedules made this go wrong); paper-scale suites follow the paper's schedule,
# under which Heart-LoRA's scores come after 10 warm-up epochs.
CHECKED_WARMUP_BENCHMARKS: tuple[str, ...] = ("vtab_mini", "fewshot_mini")


def check_warmup(path: Path, where: str, spec: Any) -> None:
    """A method's check that its schedule trains before it reads what it needs (Heart-LoRA:
    the adapters train before the heads are scored), for every training the run does."""
    from heartbench.adapters import create_method

    if spec.benchmark not in CHECKED_WARMUP_BENCHMARKS:
        return
    splits = ["train"] + (["search_train"] if spec.search else [])
    points = [dict(zip(spec.search, combo)) for combo in itertools.product(*spec.search.values())]
    for split, point in itertools.product(splits, points or [{}]):
        steps = planned_steps(spec, split)
        config = {**spec.method_config, **point}
        key = json.dumps([spec.method, config, spec.train, steps], sort_keys=True, default=str)
        if steps is None or key in _WARMUP_CHECKED:
            continue
        check = getattr(create_method(spec.method, config), "check_warmup", None)
        try:
            if check is not None:
                check(spec.train, steps)
        except UserError as err:
            raise UserError(f"{path}: {where}: {spec.method} on {spec.task}"
                            f"{f' ({spec.shots} shots)' if spec.shots else ''}: {err}") from None
        _WARMUP_CHECKED.add(key)


_WARMUP_CHECKED: set[str] = set()  # checks passed (method, config, train, steps): asked once
