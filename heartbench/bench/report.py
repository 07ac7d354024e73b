"""The report's fields: rows per case and per method, the comparisons with each limit and
with PEFT, the machine, and the targets of the issue."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from heartbench.bench.cases import Case, CaseSet
from heartbench.bench.limits import REFERENCE_LIMIT
from heartbench.bench.settings import Settings
from heartbench.bench.stats import check_target, median, paired_ratio, ratio

# Targets of the issue: (key, what, comparison, bound).
STEP_TARGETS = {"lora": 1.05, "bilora": 1.05, "heart_lora": 1.05, "mora": 1.10,
                "fourierft": 1.15}
MEMORY_TARGET = 1.10
PEFT_TARGETS = {"lora": 1.00, "fourierft": 0.80}
MERGE_TARGET = 0.98
SCORING_TARGET = 0.01
TABLES_TARGET_S = 10.0
PLANNING_TARGET_S = 1.0

# Fields every report has (the tests check them).
REPORT_KEYS = ("schema", "meta", "cases", "methods", "skipped", "peft", "inference", "scoring",
               "tables", "planning", "data", "suite_estimate", "targets")
META_KEYS = ("machine", "cpu", "device", "threads", "torch", "timm", "peft", "python",
             "backbone", "batch", "reps", "steps", "date", "load_avg", "elapsed_s", "quick")
CASE_KEYS = ("kind", "method", "limit", "config", "step_s", "step_s_reps", "cpu_s", "images_per_s",
             "peak_bytes", "resident_bytes", "gflops", "trainable_params")
METHOD_KEYS = ("limit", "limit_description", "step_s", "step_ratio", "cpu_ratio", "peak_bytes",
               "memory_ratio", "mergeable", "inference_ratio", "merged")


def case_row(case: Case, batch: int) -> dict[str, Any]:
    step = median(case.times)
    return {"kind": case.kind, "method": case.method, "limit": case.limit,
            "config": case.config, "step_s": step, "step_s_reps": case.times,
            "cpu_s": median(case.cpu_times), "cpu_s_reps": case.cpu_times,
            "images_per_s": ratio(batch, step), "peak_bytes": case.peak_bytes,
            "resident_bytes": case.resident_bytes,
            "gflops": None if case.flops is None else case.flops / 1e9,
            "trainable_params": case.extras.get("trainable")}


def compare(a: Case, b: Case) -> dict[str, Any]:
    return {"step_ratio": paired_ratio(a.times, b.times),
            "cpu_ratio": paired_ratio(a.cpu_times, b.cpu_times),
            "memory_ratio": ratio(a.peak_bytes, b.peak_bytes),
            "gflop_ratio": ratio(a.flops, b.flops)}


def method_rows(found: CaseSet) -> dict[str, dict[str, Any]]:
    """Each method and variant against its limit and the reference."""
    rows: dict[str, dict[str, Any]] = {}
    ref = found.cases[f"limit:{REFERENCE_LIMIT}"]
    for name, case in found.cases.items():
        if case.kind not in ("method", "variant"):
            continue
        limit = found.cases[f"limit:{case.limit}"]
        cmp = compare(case, limit)
        rows[name] = {"limit": limit.name, "limit_description": found.limits.get(case.limit),
                      "step_s": median(case.times), "step_ratio": cmp["step_ratio"],
                      "cpu_ratio": cmp["cpu_ratio"],
                      "peak_bytes": case.peak_bytes, "memory_ratio": cmp["memory_ratio"],
                      "gflop_ratio": cmp["gflop_ratio"],
                      "step_ratio_reps": [ratio(a, b) for a, b in zip(case.times, limit.times)],
                      "vs_reference": paired_ratio(case.times, ref.times),
                      "mergeable": bool(case.extras["method"].mergeable),
                      "inference_ratio": None, "merged": None}
    return rows


def noise(found: CaseSet) -> dict[str, Any]:
    """Two limits whose cost is the same by construction: their ratio is the noise floor."""
    a, b = found.cases.get("limit:qkv[qkv]"), found.cases.get("limit:qkv[q,v]")
    if a is None or b is None:
        return {}
    cmp = compare(a, b)
    return {"equal_limits_wall": cmp["step_ratio"], "equal_limits_cpu": cmp["cpu_ratio"],
            "note": "paired ratio of two limits whose cost is the same by construction"}


def peft_section(found: CaseSet) -> dict[str, Any] | None:
    cases = found.cases
    out: dict[str, Any] = {}
    ref = cases[f"limit:{REFERENCE_LIMIT}"]
    for kind in ("lora", "fourierft"):
        p = cases.get(f"peft:{kind}[qkv]")
        if p is None:
            continue
        entry = {"peft_step_s": median(p.times), "peft_config": p.config,
                 "peft_vs_reference": paired_ratio(p.times, ref.times),
                 "peft_memory_vs_limit": ratio(p.peak_bytes, cases["limit:qkv[qkv]"].peak_bytes)}
        for ours in (f"{kind}[qkv]", kind):
            if ours in cases:
                c = cases[ours]
                entry[f"ours_{'qkv' if ours.endswith(']') else 'qv'}"] = {
                    "step_ratio": paired_ratio(c.times, p.times),
                    "cpu_ratio": paired_ratio(c.cpu_times, p.cpu_times),
                    "memory_ratio": ratio(c.peak_bytes, p.peak_bytes),
                    "config": c.config}
        out[kind] = entry
    return out or None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        import psutil

        return f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        return "RAM unknown"


def meta(settings: Settings) -> dict[str, Any]:
    import timm
    import torch

    try:
        import peft

        peft_version = peft.__version__
    except ImportError:
        peft_version = None
    from heartbench.provenance import git_commit

    device = settings.device
    return {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs"
                   f", {_memory_gib()}",
        "cpu": _cpu_model(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "timm": timm.__version__, "peft": peft_version,
        "python": platform.python_version(), "backbone": settings.backbone_name,
        "batch": settings.batch, "reps": settings.reps, "steps": settings.steps,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "elapsed_s": None, "quick": settings.quick, "git_commit": git_commit(),
        "openmp": settings.omp_note,
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, measured value and whether it is met."""
    rows = report["methods"]
    out = []
    for name, bound in STEP_TARGETS.items():
        if name in rows:
            out.append(check_target(f"step:{name}", f"{name} step / limit",
                                    rows[name]["step_ratio"], "<=", bound))
    for name, row in rows.items():
        if row["limit"] is None:
            continue
        out.append(check_target(f"memory:{name}", f"{name} peak memory / limit",
                                row["memory_ratio"], "<=", MEMORY_TARGET))
    for kind, bound in PEFT_TARGETS.items():
        entry = (report.get("peft") or {}).get(kind)
        if not entry:
            continue
        for variant in ("qkv", "qv"):
            if f"ours_{variant}" in entry:
                out.append(check_target(
                    f"peft:{kind}:{variant}",
                    f"heartbench {kind} (targets={variant}) / PEFT {kind} (whole qkv) step",
                    entry[f"ours_{variant}"]["step_ratio"], "<=", bound))
    for name, inf in (report.get("inference") or {}).items():
        if inf["merged"]:
            out.append(check_target(f"merged:{name}", f"{name} merged inference / plain",
                                    inf["ratio"], ">=", MERGE_TARGET))
    if report.get("scoring"):
        out.append(check_target("scoring", "Heart-LoRA scoring overhead / one epoch",
                                report["scoring"]["fraction_of_epoch"], "<=", SCORING_TARGET))
    out.append(check_target("tables", "tables rebuild (s, first call)",
                            report["tables"].get("first_s"), "<=", TABLES_TARGET_S))
    out.append(check_target("planning", "dry-run planning 19 x 16 (s, load_suite)",
                            report["planning"].get("load_suite_s"), "<=", PLANNING_TARGET_S))
    return out
