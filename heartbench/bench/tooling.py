"""How long the tools around training take: the ``tables`` rebuild (the command's ``main``
in-process on the fixture records and on results/) and ``run --dry-run`` planning of a
19-task x 16-config grid."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from heartbench.bench.stats import median

ROOT = Path(__file__).resolve().parents[2]


def _time_tables(build: Any, records_dir: Path, root: Path, calls: int = 3) -> dict[str, Any]:
    """Seconds of ``calls`` rebuilds of every table and figure from ``records_dir``."""
    import contextlib
    import io
    import tempfile

    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    times, error = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(calls):
            args = parser.parse_args(["--results-dir", str(records_dir), "--out",
                                      str(Path(tmp) / str(i)), "--pdf", "skip"])
            sink = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(sink):
                code = build.main(args)
            times.append(time.perf_counter() - start)
            if code:
                error = f"tables exited with {code}: {sink.getvalue()[-200:]}"
                break
    n = len(list(records_dir.glob("*/*.json")))
    try:
        where = str(records_dir.relative_to(root))
    except ValueError:
        where = str(records_dir)
    return {"first_s": times[0], "warm_s": median(times[1:]), "records": f"{where} ({n} records)",
            "error": error}


def tables(root: Path = ROOT) -> dict[str, Any]:
    import importlib

    try:
        build = importlib.import_module("heartbench.report.build")
        if not hasattr(build, "main") or not hasattr(build, "add_arguments"):
            raise ImportError("no main/add_arguments")
    except ImportError as err:
        return {"first_s": None, "warm_s": None, "records": None,
                "note": f"skipped: tables command not available ({err})"}
    # The committed fixture records first (same input on every machine), then results/.
    found = [c for c in (root / "tests" / "fixtures" / "records" / "golden", root / "results")
             if c.is_dir() and any(c.glob("*/*.json"))]
    if not found:
        return {"first_s": None, "warm_s": None, "records": None,
                "note": "skipped: no records in the test fixtures or results/"}
    out: dict[str, Any] = {}
    for records_dir in found:
        key = "fixture" if "fixtures" in records_dir.parts else "results"
        out[key] = _time_tables(build, records_dir, root)
    main = out.get("fixture") or out["results"]
    return {"first_s": main["first_s"], "warm_s": main["warm_s"], "records": main["records"],
            **out, "note": "the tables command's main in-process (--pdf skip), each call into"
                           " a fresh folder; the first call includes imports"}


PLAN_SUITE = (
    "[suite]\nbenchmark = \"vtab1k\"\ndata_root = \"data/vtab-1k\"\ntasks = [\"all\"]\n"
    "seeds = [42]\n\n[backbone]\nname = \"vit_base_patch16_224\"\n\n[[methods]]\n"
    "name = \"lora\"\ngrid = { scale = [0.01, 0.1, 1.0, 10.0], rank = [4, 8, 16, 32] }\n"
)


def planning() -> dict[str, Any]:
    import contextlib
    import io
    import tempfile

    from heartbench.plan import print_plan
    from heartbench.runs import select
    from heartbench.suite import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_plan.toml"
        path.write_text(PLAN_SUITE, encoding="utf-8")
        load_suite(path)  # warm the imports
        load, plan = [], []
        for _ in range(3):
            start = time.perf_counter()
            suite = load_suite(path)
            load.append(time.perf_counter() - start)
            with contextlib.redirect_stdout(io.StringIO()):
                print_plan(suite, select(suite.runs, None), 0.0)
            plan.append(time.perf_counter() - start)
    return {"runs": len(suite.runs), "load_suite_s": median(load), "dry_run_s": median(plan),
            "note": "19 tasks x 16 grid points (lora scale x rank); load_suite after a"
                    " warm-up call; dry_run_s adds printing the plan"}
