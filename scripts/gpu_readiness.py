#!/usr/bin/env python
"""GPU readiness: the two checks to run first on a machine with CUDA, both reports saved.

1. ``heartbench bench --device cuda`` on ViT-B/16 (every method, fp32 and bf16 step times);
2. one short ViT-B Heart-LoRA run on full-size synthetic VTAB-1K data (``data synth
   --full-size``: 1,000 training images and the task's real test set at 224 px), through
   ``heartbench run`` as a paper-scale suite would go (fp32, the paper's default).

Usage (on the GPU machine, from the repository root)::

    python scripts/gpu_readiness.py --out bench/gpu_readiness

writes ``OUT/bench/gpu_readiness.{json,md}`` (the bench report), ``OUT/results/...`` (the
run's record, with its peak RSS and wall time) and ``OUT/summary.json`` (both, in short).
``--cpu`` runs the same path on the CPU with a stand-in backbone, for testing this script
where there is no GPU (``--backbone vit_test --size 32 --max-test 20``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--cpu", action="store_true", help="force the CPU (test this script)")
    p.add_argument("--backbone", default="vit_base_patch16_224",
                   help="backbone of both checks (default ViT-B/16, random init)")
    p.add_argument("--task", default="kitti", help="VTAB-1K task of the short run (default"
                   " kitti: 711 test images; dsprites_loc has 73,728)")
    p.add_argument("--size", type=int, default=224, help="image side of the data (default 224)")
    p.add_argument("--max-test", type=int, default=None, help="cap the test split (testing)")
    p.add_argument("--steps", type=int, default=20, help="training steps of the short run")
    p.add_argument("--bench-args", default="", help="extra arguments for heartbench bench")
    return p.parse_args(argv)


def heartbench(args: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``python -m heartbench ARGS``; stop with its exit code if it fails."""
    print("+ python -m heartbench " + " ".join(args), flush=True)
    code = subprocess.run([sys.executable, "-m", "heartbench", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}).returncode
    if code:
        sys.exit(code)


def suite_text(a: argparse.Namespace, data: Path, device: str) -> str:
    return f"""# Written by scripts/gpu_readiness.py: one short Heart-LoRA run at full size.
[suite]
name = "gpu_readiness"
benchmark = "vtab1k"
data_root = "{data}"
tasks = ["{a.task}"]
seeds = [0]

[backbone]
name = "{a.backbone}"
drop_path_rate = 0.1

[train]
epochs = 2
warmup_epochs = 1            # Heart-LoRA scores heads in epoch 1 and masks in epoch 2
max_train_batches = {max(1, a.steps // 2)}
batch_size = 64
device = "{device}"
precision = "fp32"
num_workers = {0 if a.cpu else 4}

[launcher]
executor = "local"
jobs = 1
timeout_min = 60

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = {{ rank = 32, bits = 1, scale = 1.0, ne = 3 }}
"""


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import torch

    if not a.cpu and not torch.cuda.is_available():
        print("gpu_readiness: error: no CUDA device here; --cpu runs the same checks on the"
              " CPU (a test of this script, not a readiness check)", file=sys.stderr)
        return 2
    device = "cpu" if a.cpu else "cuda"
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bench = ["bench", "--device", device, "--backbone", a.backbone, "--out", str(out / "bench"),
             "--name", "gpu_readiness", "--precision", "fp32,bf16", *a.bench_args.split()]
    heartbench(bench)
    data = out / "data"
    if not (data / a.task / "test.txt").is_file():
        cap = ["--max-test", str(a.max_test)] if a.max_test else []
        heartbench(["data", "synth", "--full-size", "--tasks", a.task, "--size", str(a.size),
                    "--out", str(data), *cap])
    suite = out / "gpu_readiness.toml"
    suite.write_text(suite_text(a, data, device))
    # A capped test split is not the standard copy: let the run proceed with a warning.
    env = {"HEARTBENCH_NONSTANDARD_DATA": "1"} if a.max_test else None
    heartbench(["run", str(suite), "--results-dir", str(out / "results")], env)
    records = sorted((out / "results" / "gpu_readiness").glob("*.json"))
    record = json.loads(records[-1].read_text())
    report = json.loads((out / "bench" / "gpu_readiness.json").read_text())
    summary = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__, "backbone": a.backbone, "task": a.task,
        "bench_report": str(out / "bench" / "gpu_readiness.json"),
        "bench_methods": sorted(report.get("methods", {})),
        "run_record": str(records[-1]), "run_status": record["status"],
        "run_test_acc": (record.get("metrics") or {}).get("test_acc"),
        "run_wall_time_s": record.get("wall_time_s"),
        "run_peak_rss_bytes": record.get("peak_rss_bytes"),
        "total_s": round(time.time() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if record["status"] == "done" else 1


if __name__ == "__main__":
    raise SystemExit(main())
