"""What one bench run measures: the command line, checked, as one object."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heartbench.errors import UserError, one_of

QUICK_BACKBONE = "vit_mini"
DEFAULT_BACKBONE = "vit_base_patch16_224"
NUM_CLASSES = 100
# Assumed sustained throughput of one modern GPU (H100-class, bf16 autocast, eager PyTorch,
# ViT-B at batch 64) on the counted matmul/attention FLOPs: ~20 % of the H100's dense bf16
# peak. No GPU was available to measure it; --gpu-tflops changes it.
DEFAULT_GPU_TFLOPS = 200.0
PRECISIONS = ("fp32", "bf16")
# Where a report goes by default: an untracked folder (``/runs/`` is git-ignored), so a
# bench run never replaces the committed, dated reports in bench/ (--update-committed does).
DEFAULT_OUT = Path("runs") / "bench"
COMMITTED_OUT = Path(__file__).resolve().parents[2] / "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"small backbone ({QUICK_BACKBONE}), few steps: a few minutes on"
                             " 2 CPU cores")
    parser.add_argument("--backbone", default=None,
                        help=f"timm model or preset (default {DEFAULT_BACKBONE}, built without"
                             f" weights; {QUICK_BACKBONE} with --quick)")
    parser.add_argument("--batch", type=int, default=None,
                        help="training batch size (default 8; 16 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--reps", type=int, default=None,
                        help="interleaved repetitions per case (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per case and repetition (default 1; 2 with --quick)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder, created if missing: the report is written to"
                             f" DIR/NAME.json and DIR/NAME.md (default {DEFAULT_OUT}/, not"
                             " tracked by git; see --name)")
    parser.add_argument("--update-committed", action="store_true",
                        help="write the report over the committed one in the checkout's"
                             " bench/ (bench/NAME.json and .md, the dated reports the docs"
                             " quote) instead of --out")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a speed or memory target is missed (default: 0,"
                             " since a missed target is slower than the goal, not broken)")
    parser.add_argument("--name", default=None,
                        help="file stem NAME of the report (default: quick, vitb for ViT-B,"
                             " else the backbone)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated registry names (default: every registered method)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--no-peft", action="store_true", help="skip the PEFT comparison")
    parser.add_argument("--gpu-tflops", type=float, default=DEFAULT_GPU_TFLOPS,
                        help="assumed sustained GPU TFLOP/s for the suite estimate (ViT-B only;"
                             f" default {DEFAULT_GPU_TFLOPS:g})")
    parser.add_argument("--profile", default=None, metavar="CASE",
                        help="also write a torch.profiler op table of one step of CASE")
    parser.add_argument("--precision", default=None, metavar="LIST",
                        help="also time the training step of every method in each of these"
                             f" precisions (comma-separated, of {', '.join(PRECISIONS)};"
                             " bf16 = torch.autocast); default: not measured")
    parser.add_argument("--pack", type=int, default=0, metavar="K",
                        help="also time LoRA's step per run with K runs packed into one model"
                             " (heartbench/pack.py) against K one by one; default: not measured")


def _pack(k: int) -> int:
    if k < 0 or k == 1:
        raise UserError(f"--pack must be 0 (off) or >= 2 runs, got {k}")
    return k


def out_folder(out: Path | None, update_committed: bool) -> Path:
    """``--out``, or the committed bench/ with ``--update-committed``, or the default."""
    if update_committed:
        if out is not None:
            raise UserError("--out and --update-committed name two places for the report;"
                            " give one")
        return COMMITTED_OUT
    return check_out(DEFAULT_OUT if out is None else out)


def check_out(out: Path) -> Path:
    """``--out`` is a folder; a file name there is a mistake, said before anything runs."""
    if out.suffix.lower() in (".json", ".md"):
        raise UserError(f"--out {out}: expected an output folder (the report goes to"
                        f" {out}/NAME.json and .md); to choose NAME use --name")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; expected an output folder")
    return out


def parse_names(text: str | None) -> list[str]:
    return [t for t in (s.strip() for s in (text or "").split(",")) if t]


def selected_methods(text: str | None) -> list[str]:
    """The registry names of ``--methods`` (every registered method when empty)."""
    from heartbench.adapters import METHODS

    names = parse_names(text)
    if not names:
        return sorted(METHODS)
    for name in names:
        if name not in METHODS:
            raise one_of("method", name, METHODS)
    return names


def _device(choice: str) -> Any:
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice not in ("cpu", "cuda"):
        raise one_of("device", choice, ("auto", "cpu", "cuda"))
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(choice)


@dataclass
class Settings:
    """The checked command line of one run, and when it started."""

    backbone_name: str
    batch: int
    reps: int
    steps: int
    device: Any
    name: str
    quick: bool
    methods: list[str]
    no_peft: bool
    gpu_tflops: float
    profile: str | None
    out: Path
    precisions: list[str] = field(default_factory=list)
    pack: int = 0
    started: float = field(default_factory=time.time)
    omp_note: str = field(
        default_factory=lambda: f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        import torch

        quick = bool(args.quick)
        backbone = args.backbone or (QUICK_BACKBONE if quick else DEFAULT_BACKBONE)
        batch, reps = args.batch or (16 if quick else 8), args.reps or 3
        steps = args.steps or (2 if quick else 1)
        for flag, value in (("--batch", batch), ("--reps", reps), ("--steps", steps)):
            if value < 1:
                raise UserError(f"{flag} must be >= 1, got {value}")
        if args.threads is not None:
            if args.threads < 1:
                raise UserError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        precisions = parse_names(getattr(args, "precision", None))
        for p in precisions:
            if p not in PRECISIONS:
                raise one_of("precision", p, PRECISIONS)
        name = args.name or ("quick" if quick else "vitb" if backbone == DEFAULT_BACKBONE
                             else backbone.replace("/", "_"))
        return cls(backbone_name=backbone, batch=batch, reps=reps, steps=steps,
                   device=_device(args.device), name=name, quick=quick,
                   methods=selected_methods(args.methods), no_peft=bool(args.no_peft),
                   gpu_tflops=args.gpu_tflops, profile=args.profile,
                   out=out_folder(args.out, getattr(args, "update_committed", False)),
                   precisions=precisions, pack=_pack(getattr(args, "pack", 0)))

    def log(self, message: str) -> None:
        print(message, flush=True)

    def elapsed(self) -> float:
        return time.time() - self.started
