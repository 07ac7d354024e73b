"""What heartbench asks of a Slurm cluster: is a controller there, what do its nodes offer,
what state are our array tasks in. Only the client commands (sinfo, squeue) are used, never
sacct: a cluster without accounting storage (like scripts/slurm-cluster.sh's) has none.

A launch's resource request is resolved here from the suite's ``[launcher]`` table and the
nodes ``sinfo`` reports, and refused before submission, with one line naming the launcher
key, when no node of the partition could ever run it (the job would pend forever).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from typing import Any

from heartbench.errors import UserError

# Slurm sends submitit's preemption signal (USR2) this long before the time limit.
SIGNAL_LEAD_S = 90
# States in which an array task will not run again (unless someone requeues it by hand).
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


@dataclass(frozen=True)
class Node:
    name: str
    partition: str
    default: bool  # the partition is the cluster's default
    cpus: int
    mem_mb: int
    gpus: int


def _call(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def controller_error() -> str | None:
    """None when a Slurm controller answers ``sinfo``, else its one-line complaint."""
    try:
        proc = _call(["sinfo", "-h", "-o", "%P"])
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed ({err})"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"sinfo exited with {proc.returncode}"
    return None


def nodes() -> list[Node]:
    proc = _call(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"])
    if proc.returncode != 0:
        raise UserError(f"cannot read the cluster's nodes: {proc.stderr.strip() or 'sinfo failed'}")
    found = []
    for line in proc.stdout.splitlines():
        name, part, cpus, mem, gres = (line.split("|") + [""] * 5)[:5]
        if not name:
            continue
        found.append(Node(name=name, partition=part.rstrip("*"), default=part.endswith("*"),
                          cpus=int(cpus or 0), mem_mb=int(mem.rstrip("+") or 0),
                          gpus=_gpus(gres)))
    return found


def _gpus(gres: str) -> int:
    """GPUs in a gres string such as ``gpu:4``, ``gpu:a100:8(S:0-1)`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def resolve_request(launcher: dict[str, Any], device: str, n_runs: int,
                    available: list[Node]) -> dict[str, Any]:
    """The request per array task: unset keys get defaults that fit the partition's nodes,
    set keys are checked against them (one line naming the key when nothing fits)."""
    partition = launcher.get("partition")
    if partition is None:
        defaults = sorted({n.partition for n in available if n.default})
        if not defaults:
            raise UserError("the cluster has no default partition; set launcher.partition"
                            f" (partitions: {', '.join(sorted({n.partition for n in available}))})")
        partition = defaults[0]
    part_nodes = [n for n in available if n.partition == partition]
    if not part_nodes:
        names = ", ".join(sorted({n.partition for n in available})) or "none"
        raise UserError(f"launcher.partition = {partition!r}: no such partition on this cluster"
                        f" (partitions: {names})")
    max_cpus = max(n.cpus for n in part_nodes)
    max_gpus = max(n.gpus for n in part_nodes)
    gpus = launcher.get("gpus_per_node")
    if gpus is None:  # ask for a GPU when the runs want one and the partition has them
        gpus = 1 if device == "cuda" or (device == "auto" and max_gpus > 0) else 0
    cpus = launcher.get("cpus_per_task", min(8, max_cpus))
    fit = [n for n in part_nodes if n.cpus >= cpus]
    if not fit:
        raise UserError(f"launcher.cpus_per_task = {cpus}, but the largest node of partition"
                        f" {partition!r} has {max_cpus} CPUs")
    if gpus > max_gpus:
        raise UserError(f"launcher.gpus_per_node = {gpus}, but the nodes of partition"
                        f" {partition!r} have at most {max_gpus} GPUs"
                        + (" (set it to 0 to run on CPUs)" if max_gpus == 0 else ""))
    fit = [n for n in fit if n.gpus >= gpus]
    if not fit:
        raise UserError(f"no node of partition {partition!r} has both launcher.cpus_per_task ="
                        f" {cpus} CPUs and launcher.gpus_per_node = {gpus} GPUs")
    best_mem_gb = max(n.mem_mb for n in fit) / 1024
    mem_gb = launcher.get("mem_gb")
    if mem_gb is None:  # a task's share of a node's memory, as for its CPUs, at most 32 GB
        node = max(fit, key=lambda n: n.mem_mb)
        mem_gb = min(32.0, math.floor(node.mem_mb / 1024 * cpus / node.cpus * 10) / 10)
    if mem_gb > best_mem_gb:
        raise UserError(f"launcher.mem_gb = {mem_gb}, but the nodes of partition {partition!r}"
                        f" with {cpus} CPUs offer at most {best_mem_gb:.1f} GB")
    timeout = int(launcher.get("timeout_min", 24 * 60))
    if timeout * 60 <= SIGNAL_LEAD_S + 30:
        raise UserError(f"launcher.timeout_min = {timeout} leaves no working time: Slurm sends"
                        f" the preemption signal {SIGNAL_LEAD_S} s before the limit; use >= 3")
    # Array tasks that can run at once: what the partition's nodes hold, capped by the suite.
    slots = sum(min(n.cpus // cpus, n.gpus // gpus if gpus else n.cpus)
                for n in fit) or 1
    parallel = min(int(launcher.get("array_parallelism", 32)), slots)
    # One wave by default: each task slot gets its share of the runs, so the start-up
    # (importing torch and timm, ~20 s) is paid once per slot, not once per run.
    per_task = int(launcher.get("runs_per_task", math.ceil(n_runs / max(parallel, 1))))
    return {"partition": partition, "cpus_per_task": cpus, "gpus_per_node": gpus,
            "mem_gb": mem_gb, "timeout_min": timeout, "runs_per_task": per_task,
            "array_parallelism": int(launcher.get("array_parallelism", 32))}


def queue(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """``{task id: (state, reason)}`` of the given jobs (arrays expanded), including
    recently ended ones; None when the controller does not answer."""
    if not job_ids:
        return {}
    try:
        proc = _call(["squeue", "-h", "-t", "all", "-r", "-j", ",".join(job_ids),
                      "-o", "%i|%T|%r"])
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        # A job id that has aged out of the controller's memory is an error for squeue:
        # it has ended; ask for the others one by one.
        if "Invalid job id" not in proc.stderr:
            return None
        if len(job_ids) == 1:
            return {}
        states: dict[str, tuple[str, str]] = {}
        for job in job_ids:
            found = queue([job])
            if found is None:
                return None
            states.update(found)
        return states
    states = {}
    for line in proc.stdout.splitlines():
        task, state, reason = (line.split("|") + ["", ""])[:3]
        states[task.strip()] = (state.strip(), reason.strip())
    return states


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _call(["scancel", *job_ids])


def task_request(suite: Any, todo: list[Any]) -> dict[str, Any]:
    """The per-task request, checked against the cluster's nodes before anything is submitted."""
    devices = {r.train["device"] for r in todo}
    device = "cuda" if "cuda" in devices else ("auto" if "auto" in devices else "cpu")
    request = resolve_request(suite.launcher, device, len(todo), nodes())
    if "jobs" in suite.launcher:
        print(f"note: launcher.jobs = {suite.launcher['jobs']} applies to local runs only;"
              " on Slurm launcher.runs_per_task and array_parallelism apply")
    tasks = -(-len(todo) // request["runs_per_task"])
    print(f"slurm: {tasks} array task(s) of up to {request['runs_per_task']} runs"
          f" (launcher.runs_per_task), each {request['cpus_per_task']} CPUs,"
          f" {request['mem_gb']} GB, {request['gpus_per_node']} GPUs,"
          f" {request['timeout_min']} min, partition {request['partition']}")
    return request
