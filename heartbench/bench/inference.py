"""Inference (eval, no grad) of every method against the plain backbone: merged when the
method can merge (``Method.mergeable``), unmerged otherwise (marked)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heartbench.bench.cases import Workload, method_overrides
from heartbench.bench.settings import Settings
from heartbench.bench.stats import median, paired_ratio, ratio, rotate
from heartbench.bench.timing import timed


def leftovers(model: Any) -> int:
    """Forward hooks and AdaptedLinear wrappers left in a model: 0 after a clean merge.

    A merged model with none runs exactly the plain backbone's ops, so its inference time
    equals the plain one's by construction and a measured ratio off 1 is noise.
    """
    from heartbench.adapters.base import AdaptedLinear

    count = 0
    for module in model.modules():
        count += len(module._forward_hooks) + len(module._forward_pre_hooks)
        count += isinstance(module, AdaptedLinear)
    return count


def _forward(model: Any, images: Any, device: Any) -> Callable[[], Any]:
    import torch

    from heartbench.train import autocast

    def run() -> Any:
        with torch.no_grad(), autocast(device):
            return model(images)
    return run


def forward_flops_per_image(settings: Settings, work: Workload) -> float:
    """Counted FLOPs of one plain eval forward, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    plain = work.template.model
    plain.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        _forward(plain, work.images, settings.device)()
    plain.train()
    return counter.get_total_flops() / settings.batch


def _one_method(settings: Settings, work: Workload, name: str, run_plain: Callable[[], Any]
                ) -> dict[str, Any]:
    import copy

    import torch

    from heartbench.adapters import create_method
    from heartbench.adapters.base import NotMergeable

    torch.manual_seed(0)
    # A private copy: merging writes into the backbone's weights.
    backbone = copy.deepcopy(work.template)
    method = create_method(name, method_overrides(name, work.template))
    method.attach(backbone)
    method.nominal_state()
    merged = False
    if method.mergeable:
        try:
            method.merge()
            merged = True
        except NotMergeable:
            pass
    backbone.model.eval()
    run_method = _forward(backbone.model, work.images, settings.device)
    run_method()
    t_method, t_plain = [], []
    for r in range(settings.reps):
        pair = [(t_method, run_method), (t_plain, run_plain)]
        for bucket, fn in rotate(pair, r):
            bucket.append(median(timed(fn, settings.device) for _ in range(settings.steps)))
    return {"merged": merged, "mergeable": bool(method.mergeable),
            "leftovers": leftovers(backbone.model),
            "step_s": median(t_method), "plain_s": median(t_plain),
            "ratio": paired_ratio(t_plain, t_method),  # throughput ratio
            "images_per_s": ratio(settings.batch, median(t_method))}


def inference(settings: Settings, work: Workload, methods: list[str]) -> dict[str, Any]:
    """Per method: merged?, leftovers, eval-forward time and its ratio to the plain one."""
    plain = work.template.model
    plain.eval()
    run_plain = _forward(plain, work.images, settings.device)
    out = {name: _one_method(settings, work, name, run_plain) for name in methods}
    plain.train()
    return out
