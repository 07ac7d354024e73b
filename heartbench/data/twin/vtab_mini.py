"""VTAB-mini: the eleven task builders by name, and the writer of the VTAB-1K layout."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from heartbench.data.tasks import registered_tasks, resolve_task
from heartbench.data.twin.common import TaskData
from heartbench.data.twin.natural import build_animals, build_digits8, build_mnist, build_textures
from heartbench.data.twin.specialized import build_histology, build_modality, build_retina
from heartbench.data.twin.structured import (
    build_counting,
    build_location,
    build_orientation,
    build_scale,
)
from heartbench.data.twin.writer import task_folder
from heartbench.data.writing import write_vtab_task

# A new twin task: its builder in the module of its group, one line here, one in tasks.py.
BUILDERS: dict[str, Callable[[int], TaskData]] = {
    "mnist": build_mnist,
    "animals": build_animals,
    "digits8": build_digits8,
    "textures": build_textures,
    "histology": build_histology,
    "modality": build_modality,
    "retina": build_retina,
    "orientation": build_orientation,
    "counting": build_counting,
    "location": build_location,
    "scale": build_scale,
}


def build_task(name: str, seed: int = 0) -> TaskData:
    """Images, labels and sources of one VTAB-mini task (nothing written)."""
    return BUILDERS[resolve_task("vtab_mini", name).name](seed)


def write_vtab_mini(
    out: str | os.PathLike,
    seed: int = 0,
    tasks: Iterable[str] | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> dict[str, dict[str, int]]:
    """Write VTAB-mini under ``out`` in the VTAB-1K layout; task -> split -> line count.
    Each task folder appears whole or not at all.

    ``progress`` may wrap the task iterator (e.g. tqdm) — library code never prints.
    """
    names = (
        list(registered_tasks("vtab_mini"))
        if tasks is None
        else [resolve_task("vtab_mini", t).name for t in tasks]
    )
    summary = {}
    for name in progress(names) if progress else names:
        d = build_task(name, seed)
        with task_folder(out, name) as tmp:
            summary[name] = write_vtab_task(
                tmp, name, d.train, d.train_labels, d.test, d.test_labels, d.n_train, fmt="png"
            )
    return summary
