"""One bench run, section by section, into one report (a plain dict, written as JSON).

To add a section: one function (in its own module when it is more than a few lines),
called here, with its field added to the report.
"""

from __future__ import annotations

from typing import Any

from heartbench.bench import timing
from heartbench.bench.cases import build_cases, build_workload
from heartbench.bench.estimate import suite_estimate
from heartbench.bench.inference import forward_flops_per_image, inference
from heartbench.bench.loading import data_throughput
from heartbench.bench.packing import step_per_run
from heartbench.bench.precision import precision_steps
from heartbench.bench.report import case_row, meta, method_rows, noise, peft_section, targets
from heartbench.bench.scoring import scoring
from heartbench.bench.settings import Settings
from heartbench.bench.tooling import planning, tables


def run(settings: Settings) -> dict[str, Any]:
    import torch

    log = settings.log
    log(f"heartbench bench: backbone {settings.backbone_name}, batch {settings.batch},"
        f" {torch.get_num_threads()} threads, {settings.reps} reps x {settings.steps} steps,"
        f" device {settings.device}")
    work = build_workload(settings)
    log("building cases ...")
    found = build_cases(settings, work)
    log(f"{len(found.cases)} training cases: {', '.join(found.cases)}")
    timing.warm_up(found, settings.device)
    log(f"memory and FLOPs (one profiled step per case; {settings.elapsed():.0f} s so far) ...")
    timing.profile_all(settings, found, work)
    if settings.profile:
        timing.write_profile(settings, found, settings.profile)
    log(f"timing (interleaved; {settings.elapsed():.0f} s so far) ...")
    timing.time_all(settings, found)
    cases = {name: case_row(c, settings.batch) for name, c in found.cases.items()}
    rows = method_rows(found)
    floor, peft = noise(found), peft_section(found)
    found.release()  # free the training cases before the inference copies
    log(f"inference ({settings.elapsed():.0f} s so far) ...")
    methods = [m for m in settings.methods if m not in found.skipped]
    flops_per_image = forward_flops_per_image(settings, work)
    inf = inference(settings, work, methods)
    for name, entry in inf.items():
        if name in rows:
            rows[name]["inference_ratio"] = entry["ratio"]
            rows[name]["merged"] = entry["merged"]
    score = None
    if "heart_lora" in methods:
        log(f"responsiveness scoring ({settings.elapsed():.0f} s so far) ...")
        score = scoring(settings, work)
    log(f"tables, planning, data loading ({settings.elapsed():.0f} s so far) ...")
    report_tables, report_planning = tables(), planning()
    data = data_throughput(work.template.input_size)
    data["training_images_per_s"] = {n: c["images_per_s"] for n, c in cases.items()}
    report = {
        "schema": 1, "meta": meta(settings), "cases": cases, "methods": rows,
        "limits": found.limits, "skipped": found.skipped, "peft": peft, "noise": floor,
        "inference": inf, "scoring": score, "tables": report_tables,
        "planning": report_planning, "data": data,
        "suite_estimate": suite_estimate(settings, found, rows, inf, flops_per_image),
        "notes": found.notes,
    }
    if settings.precisions:
        log(f"step time per precision ({settings.elapsed():.0f} s so far) ...")
        report["precision"] = precision_steps(settings, work, methods)
    if settings.pack:
        log(f"packed runs, K = {settings.pack} ({settings.elapsed():.0f} s so far) ...")
        report["packing"] = step_per_run(settings.backbone_name, "lora", None, settings.pack,
                                         settings.batch, settings.reps, settings.device)
    report["targets"] = targets(report)
    report["meta"]["elapsed_s"] = settings.elapsed()
    return report
