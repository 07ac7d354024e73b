"""Packed runs (heartbench/pack.py) against the same runs one by one.

Two measurements, side by side in one report:

* ``step``: the training step per run of K runs packed into one model against K separate
  steps (one process, the same threads), on one synthetic batch per run; steps of the two
  modes are interleaved rep by rep and the median is kept.
* ``twin``: runs per hour of a small sweep (LoRA, Bi-LoRA, Heart-LoRA x K seeds on one
  VTAB-mini task, the twin's schedule) through ``heartbench run`` with the twin's launcher
  (local, ``jobs`` workers sharing the cores), unpacked and with ``launcher.pack = K``.

``python -m heartbench.bench.packing --help``; the shared machine's load average is
recorded with every number (it moves them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TWIN_METHODS = {"lora": "{ rank = 8, scale = 1.0 }",
                "bilora": "{ rank = 32, bits = 1, scale = 1.0 }",
                "heart_lora": "{ rank = 32, bits = 1, scale = 1.0, ne = 3 }"}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------
# Step per run
# ---------------------------------------------------------------------------
def _runs(backbone: str, method: str, config: dict[str, Any], k: int, batch: int,
          device: Any) -> Any:
    import torch

    from heartbench.adapters import create_method
    from heartbench.backbones import build_backbone

    runs = []
    for seed in range(k):
        torch.manual_seed(0)  # one frozen backbone for all runs, as pretrained weights give
        bb = build_backbone(backbone, 10, drop_path_rate=0.1)
        torch.manual_seed(seed + 1)  # each run's own adapter and head
        bb.model.reset_classifier(10)
        m = create_method(method, config)
        m.attach(bb)
        bb.model.to(device).train()
        params = m.trainable_parameters() + bb.head_parameters()
        runs.append((bb, m, torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)))
    size = runs[0][0].input_size
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(k, batch, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, 10, (k, batch), generator=gen).to(device)
    return runs, images, labels


def step_per_run(backbone: str = "vit_mini", method: str = "lora",
                 config: dict[str, Any] | None = None, k: int = 3, batch: int = 64,
                 reps: int = 5, device: Any = "cpu") -> dict[str, Any]:
    """Median seconds per run-step, packed and one by one (interleaved reps)."""
    import torch
    from torch.nn import functional as F

    from heartbench.pack import PackState, RunRng, pack_modules

    runs, images, labels = _runs(backbone, method, config or {}, k, batch, device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    state = PackState([RunRng() for _ in runs])
    packed = pack_modules([bb.model for bb, _, _ in runs], state)
    packed.train()

    def alone() -> None:
        for (bb, _, opt), x, y in zip(runs, images, labels):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(bb.model(x), y).backward()
            opt.step()

    def together() -> None:
        logits = packed(images.flatten(0, 1)).split(batch)
        total = sum(F.cross_entropy(out, y) for out, y in zip(logits, labels))
        for _, _, opt in runs:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for _, _, opt in runs:
            opt.step()

    times: dict[str, list[float]] = {"alone": [], "packed": []}
    alone(), together()  # warm-up
    for rep in range(reps):
        for name, fn in sorted({"alone": alone, "packed": together}.items(),
                               reverse=bool(rep % 2)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) / k)
    med = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    return {"backbone": backbone, "method": method, "k": k, "batch": batch, "reps": reps,
            "threads": torch.get_num_threads(), "device": str(device),
            "s_per_run_step_alone": med["alone"],
            "s_per_run_step_packed": med["packed"], "speedup": med["alone"] / med["packed"],
            "load_avg": load()}


# ---------------------------------------------------------------------------
# Twin sweep, end to end
# ---------------------------------------------------------------------------
SUITE = """
[suite]
name = "pack_bench_{pack}"
benchmark = "vtab_mini"
data_root = "{data}"
tasks = ["{task}"]
seeds = {seeds}
[backbone]
name = "vit_mini"
weights = "{weights}"
drop_path_rate = 0.1
[train]
epochs = {epochs}
warmup_epochs = 1
lr = 5e-3
batch_size = 64
[launcher]
executor = "local"
jobs = {jobs}
pack = {pack}
"""


def twin_sweep(weights: str, task: str = "digits8", k: int = 3, epochs: int = 3,
               jobs: int = 2, work: Path | None = None, packed_first: bool = False
               ) -> dict[str, Any]:
    """Runs per hour of the sweep unpacked and packed (K seeds per pack), end to end."""
    from heartbench.data.twin import ensure_twin_task

    work = Path(work or tempfile.mkdtemp(prefix="pack_bench_"))
    data = work / "vtab-mini"
    ensure_twin_task("vtab_mini", data, task)
    out: dict[str, Any] = {"task": task, "k": k, "epochs": epochs, "jobs": jobs,
                           "packed_first": packed_first,
                           "methods": list(TWIN_METHODS), "runs": len(TWIN_METHODS) * k}
    # The machine is shared: run the two orders on two occasions to see the load's effect.
    for pack in ((k, 1) if packed_first else (1, k)):
        suite = work / f"pack{pack}.toml"
        text = SUITE.format(pack=pack, data=data, task=task, seeds=list(range(k)),
                            weights=Path(weights).resolve(), epochs=epochs, jobs=jobs)
        text += "".join(f'\n[[methods]]\nname = "{m}"\nconfig = {c}\n'
                        for m, c in TWIN_METHODS.items())
        suite.write_text(text)
        before = load()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "heartbench", "run", str(suite),
                        "--results-dir", str(work / f"results{pack}")], check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        out[f"pack{pack}"] = {"wall_s": wall, "runs_per_hour": out["runs"] * 3600 / wall,
                              "load_avg_before": before, "load_avg_after": load()}
    out["speedup"] = out[f"pack{k}"]["runs_per_hour"] / out["pack1"]["runs_per_hour"]
    out["same_results"] = _same_accuracy(work / "results1", work / f"results{k}")
    return out


def _same_accuracy(a: Path, b: Path) -> bool:
    def accs(root: Path) -> dict[str, float]:
        return {p.stem: json.loads(p.read_text())["metrics"]["test_acc"]
                for p in root.rglob("*.json") if ".submitit" not in p.parts
                and not p.name.startswith(".")}
    return accs(a) == accs(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heartbench.bench.packing",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--step", action="append", default=[], metavar="BACKBONE:BATCH",
                        help="step per run on this backbone and batch (repeatable)")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--twin-weights", help="vit_mini weights: run the twin sweep too")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--packed-first", action="store_true",
                        help="twin sweep: the packed launch before the unpacked one")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"load_avg_start": load(), "cpus": os.cpu_count(), "step": []}
    for item in args.step:
        name, batch = item.split(":")
        report["step"].append(step_per_run(name, args.method, None, args.k, int(batch),
                                           args.reps))
        print(json.dumps(report["step"][-1]), flush=True)
    if args.twin_weights:
        report["twin"] = twin_sweep(args.twin_weights, k=args.k, epochs=args.epochs,
                                    jobs=args.jobs, packed_first=args.packed_first)
        print(json.dumps(report["twin"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
