"""Make one missing task of a twin (or of the synthetic benchmark) on demand."""

from __future__ import annotations

import os
from pathlib import Path

from heartbench.data.twin.fewshot_mini import write_fewshot_mini
from heartbench.data.twin.vtab_mini import write_vtab_mini
from heartbench.data.twin.writer import task_folder

# Benchmarks whose data heartbench can write itself (deterministic builders).
WRITABLE = ("vtab_mini", "fewshot_mini", "synth")


def ensure_twin_task(benchmark: str, data_root: str | os.PathLike, task: str) -> bool:
    """Write the twin data of one task under ``data_root`` when its folder is missing (the
    builders are deterministic, so this is the data the records were trained on); True if
    written. Other benchmarks are left alone: their data cannot be made here."""
    folder = Path(data_root) / task
    if folder.is_dir():
        return False
    if benchmark == "vtab_mini":
        write_vtab_mini(data_root, tasks=[task])
    elif benchmark == "fewshot_mini":
        write_fewshot_mini(data_root, datasets=[task])
    elif benchmark == "synth":
        from heartbench.data.synth import write_synth

        with task_folder(data_root, task) as tmp:
            write_synth(tmp, tasks=[task])
    else:
        return False
    return True
