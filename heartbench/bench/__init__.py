"""``python -m heartbench bench``: speed and memory of every method against its physical limit.

One run (one process) measures, each part in its own module:

* ``cases``: the training cases: every registered method (and lora/fourierft on the whole
  fused qkv), each method's **limit** (``limits``: the frozen backbone with a trainable
  scalar gate at every site the method adapts), the reference ``limit:patch`` (the frozen
  backbone with its gradient reaching the patch embedding) and Hugging Face PEFT's LoRA and
  FourierFT on the whole fused qkv. Cases are built once; their timed steps are interleaved,
  rep by rep, in a rotating order; every number is a median.
* ``timing``: step wall and CPU time, peak memory and FLOPs (one profiled step per case).
* ``inference``: eval forward with the adapter merged (``Method.mergeable``) or unmerged.
* ``scoring``: Heart-LoRA's responsiveness scoring as a fraction of one protocol epoch.
* ``tooling``: the ``tables`` rebuild and ``run --dry-run`` planning times.
* ``loading``: data-loading throughput of the VTAB-1K loader.
* ``estimate``: the GPU time of the full VTAB-1K suite (on ViT-B only).
* ``precision``: with ``--precision``, the step per precision (fp32, bf16 autocast).
* ``report`` assembles the fields and targets, ``render`` the Markdown; ``run`` calls them
  in order; ``stats`` holds the arithmetic (pure, unit-tested without torch).

Outputs ``<out>/<name>.json`` and ``<out>/<name>.md`` (default ``runs/bench/``, untracked;
``--update-committed`` replaces the committed report in ``bench/``), then a verdict
(``verdict``): what the targets say; ``--strict`` exits 1 on a missed target.
"""

from __future__ import annotations

import argparse
import os
import sys

from heartbench.bench.cases import Case, clone_backbone, method_overrides
from heartbench.bench.limits import REFERENCE_LIMIT, _slice_gate, install_gates, limit_spec
from heartbench.bench.render import render_markdown, write_report
from heartbench.bench.report import CASE_KEYS, META_KEYS, METHOD_KEYS, REPORT_KEYS, targets
from heartbench.bench.settings import Settings, add_arguments, selected_methods
from heartbench.bench.stats import (
    check_target,
    extrapolate_step,
    median,
    paired_ratio,
    peak_from_events,
    ratio,
    rotate,
    schedule,
    scoring_fraction,
    suite_gpu_hours,
)
from heartbench.bench.verdict import exit_code, verdict

__all__ = [
    "CASE_KEYS", "META_KEYS", "METHOD_KEYS", "REFERENCE_LIMIT", "REPORT_KEYS", "Case",
    "Settings", "_slice_gate", "add_arguments", "check_target", "clone_backbone",
    "extrapolate_step", "install_gates", "limit_spec", "main", "median", "method_overrides",
    "paired_ratio", "peak_from_events", "ratio", "render_markdown", "rotate", "schedule",
    "scoring_fraction", "selected_methods", "suite_gpu_hours", "targets", "write_report",
]


def main(args: argparse.Namespace) -> int:
    # On a shared CPU, OpenMP threads that spin-wait after a parallel region steal the core
    # from the main thread: small serial ops then stall a whole time slice (~8 ms each,
    # measured). Passive waiting avoids it; it must be set before torch loads OpenMP.
    omp_effective = "torch" not in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from heartbench.bench.run import run

    settings = Settings.from_args(args)
    settings.omp_note = (f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
                         + ("" if omp_effective else
                            " (torch was already imported: not applied)"))
    report = run(settings)
    replaced = (settings.out / f"{settings.name}.json").exists()
    json_path, md_path = write_report(report, settings.out, settings.name)
    print(render_markdown(report))
    print(f"{'replaced the earlier report' if replaced else 'wrote'} {json_path} and {md_path}")
    strict = bool(getattr(args, "strict", False))
    for line in verdict(report["targets"], report["meta"], strict):
        print(line)
    return exit_code(report["targets"], strict)
