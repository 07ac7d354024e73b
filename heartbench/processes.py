"""Processes of this host: whether one still lives (claims, partial data folders, status)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except PermissionError:  # another user's process
        return True
    return True


# How far a process's start time may differ from the one its claim recorded (the clock
# tick of /proc's start times, with room to spare).
START_TOLERANCE_S = 1.0
# What a heartbench worker's command line contains: `python -m heartbench run` (debug
# executor), submitit's local controller or job process (local, slurm).
WORKER_MARKS = ("heartbench", "submitit")


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if it is not there."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_worker(pid: int, start: object) -> bool:
    """Whether ``pid`` is still the process that wrote a claim on this host: alive, not a
    zombie, and started at ``start`` (a reused pid starts later); for a claim that recorded
    no start time, a process whose command line is heartbench's or submitit's."""
    import psutil

    if not pid_alive(pid):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if start is not None:
            if isinstance(start, bool) or not isinstance(start, (int, float)):
                return False  # not a start time heartbench wrote: not its claim
            return abs(process.create_time() - start) <= START_TOLERANCE_S
        command = " ".join(process.cmdline())
    except psutil.AccessDenied:  # another user's process: cannot tell, so it may be one
        return True
    except psutil.Error:  # ended meanwhile
        return False
    return any(mark in command for mark in WORKER_MARKS)
