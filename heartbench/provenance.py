"""Where and how a run ran, as its record says: package versions, the checkout's commit, the
CPU kind its float kernels depend on, and the process's peak memory."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def reset_peak_rss() -> None:
    """Start this process's peak-RSS count afresh (Linux: clear_refs 5), if the OS lets us."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process since :func:`reset_peak_rss` (Linux VmHWM), else
    over its whole life (getrusage); DataLoader worker processes are not included."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale
    except (ImportError, OSError):
        return None


def versions() -> dict[str, str]:
    import numpy as np
    import timm
    import torch

    import heartbench

    return {"python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "heartbench": heartbench.__version__,
            "numpy": np.__version__}


def git_commit() -> str | None:
    """The commit of the heartbench checkout (with '+dirty' if it has local changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_info() -> dict[str, Any]:
    """What CPU float kernels depend on: torch's dispatch level (AVX2, AVX512, ...), the
    machine and its model name. Stored in every record; ``check --reproduce`` compares it."""
    import torch

    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or None
    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "model": model}
