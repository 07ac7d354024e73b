"""An estimate of the GPU time of the full VTAB-1K suite (suites/vtab1k.toml) per method,
from the measured step times. Made only when the bench ran the suite's own backbone
(ViT-B): a step of a tiny CPU-twin model says nothing about a ViT-B suite on a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heartbench.bench.cases import CaseSet
from heartbench.bench.limits import REFERENCE_LIMIT
from heartbench.bench.settings import Settings
from heartbench.bench.stats import extrapolate_step, median, suite_gpu_hours
from heartbench.errors import UserError

SUITE = Path(__file__).resolve().parents[2] / "suites" / "vtab1k.toml"
# Test-set sizes of VTAB-1K, the paper's Table 8.
VTAB1K_TEST_SIZES = {
    "cifar": 10000, "caltech101": 6084, "dtd": 1880, "oxford_flowers102": 6149,
    "oxford_iiit_pet": 3669, "svhn": 26032, "sun397": 21750, "patch_camelyon": 32768,
    "eurosat": 5400, "resisc45": 6300, "diabetic_retinopathy": 42670, "clevr_count": 15000,
    "clevr_dist": 15000, "dmlab": 22735, "kitti": 711, "dsprites_loc": 73728,
    "dsprites_ori": 73728, "smallnorb_azi": 12150, "smallnorb_ele": 12150,
}


def suite_plan(path: Path = SUITE) -> tuple[str, dict[str, int]] | None:
    """(backbone name, runs per method name) of the suite (grids and per-task values
    expanded); None when it cannot be read."""
    from heartbench.suite import load_suite

    try:
        suite = load_suite(path)
    except (UserError, OSError):
        return None
    counts: dict[str, int] = {}
    for run in suite.runs:
        counts[run.method] = counts.get(run.method, 0) + 1
    return suite.backbone["name"], counts


def same_architecture(a: str, b: str) -> bool:
    """Two backbone names build the same network (a timm tag after "." picks weights only)."""
    from heartbench.backbones import resolve_name

    (arch_a, kwargs_a), (arch_b, kwargs_b) = resolve_name(a), resolve_name(b)
    return arch_a.split(".")[0] == arch_b.split(".")[0] and kwargs_a == kwargs_b


def suite_estimate(settings: Settings, found: CaseSet, rows: dict[str, dict[str, Any]],
                   inference: dict[str, Any], forward_flops_per_image: float | None
                   ) -> dict[str, Any]:
    ref = found.cases.get(f"limit:{REFERENCE_LIMIT}")
    ref_step = median(ref.times) if ref else None
    if not ref or not ref.flops or not ref_step:
        return {"note": "skipped: no reference step"}
    plan = suite_plan()
    if plan is None:
        return {"note": f"skipped: {SUITE.name} could not be read"}
    backbone, runs = plan
    if not same_architecture(settings.backbone_name, backbone):
        return {"note": f"skipped: the estimate is for {SUITE.name}'s backbone ({backbone});"
                        f" this run measured {settings.backbone_name}"}
    cpu_tflops = ref.flops / ref_step / 1e12
    speedup = settings.gpu_tflops / cpu_tflops
    # One forward of the plain backbone per test image (counted in the inference part;
    # about half the reference step's FLOPs if that part did not run).
    per_image = forward_flops_per_image or ref.flops / 2.0 / settings.batch
    test_images = sum(VTAB1K_TEST_SIZES.values())
    per_method: dict[str, Any] = {}
    for name, row in rows.items():
        n_runs = runs.get(name)
        if n_runs is None or row.get("step_s") is None:
            continue
        step_gpu = extrapolate_step(row["step_s"], settings.batch) / speedup
        inf = inference.get(name, {})
        slow = 1.0 / inf["ratio"] if inf.get("ratio") else 1.0
        eval_gpu = (test_images / len(VTAB1K_TEST_SIZES) * per_image * slow
                    / (settings.gpu_tflops * 1e12))
        per_method[name] = {
            "runs": n_runs, "step_s_gpu_batch64": step_gpu,
            "train_gpu_h": suite_gpu_hours(n_runs, step_gpu, 0.0),
            "eval_gpu_h": suite_gpu_hours(n_runs, 0.0, eval_gpu),
            "gpu_h": suite_gpu_hours(n_runs, step_gpu, eval_gpu),
        }
    return {
        "cpu_tflops_measured": cpu_tflops, "gpu_tflops_assumed": settings.gpu_tflops,
        "gpu_over_cpu": speedup, "test_images_per_task_set": test_images,
        "methods": per_method,
        "total_gpu_h": sum(m["gpu_h"] for m in per_method.values()),
        "note": ("GPU step = measured CPU step x 64/batch / (GPU/CPU speed ratio); the ratio"
                 " is the assumed GPU TFLOP/s over the CPU's measured TFLOP/s on the"
                 " frozen->patch reference (counted matmul/attention FLOPs). Runs per"
                 " method from suites/vtab1k.toml; 100 epochs x 15 steps of batch 64 per"
                 " run plus one pass over the test set (Table 8 sizes) per run."
                 " No GPU was available: the ratio is an assumption."),
    }
