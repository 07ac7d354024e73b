"""fewshot-mini: the real-image twin of the few-shot benchmark in the NOAH/CoOp
annotation layout (shots 1/2/4/8/16, split seeds 0/1/2)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from heartbench.data.tasks import registered_tasks, resolve_task
from heartbench.data.twin.common import stratified_split
from heartbench.data.twin.images import SIZE, pad_to, resize, to_rgb
from heartbench.data.twin.sources import animal_silhouettes, mnist_digits, sklearn_digits
from heartbench.data.twin.writer import task_folder
from heartbench.data.writing import task_rng, write_image

FEWSHOT_POOL, FEWSHOT_VAL, FEWSHOT_TEST = 32, 10, 100  # per class


def _fewshot_source(name: str) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    if name == "animals":
        x, y = animal_silhouettes()
        return x, y, lambda a: to_rgb(pad_to(a))
    if name == "mnist":
        x, y = mnist_digits()
        return x, y, lambda a: to_rgb(pad_to(a))
    x, y = sklearn_digits()
    return x, y, lambda a: to_rgb(resize(a, (SIZE, SIZE)))


def _write_dataset(out: Path, name: str, seed: int, shots: list[int], shot_seeds: list[int]
                   ) -> dict[str, int]:
    """One dataset's images and annotation lists under ``out/name``; list -> line count."""
    x, y, render = _fewshot_source(name)
    rng = task_rng(seed, f"fewshot/{name}")
    pool, val, test = stratified_split(y, [FEWSHOT_POOL, FEWSHOT_VAL, FEWSHOT_TEST], rng)
    folder = Path(out) / name
    ann = folder / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    rel: dict[int, str] = {}
    lines = {}
    for split, idx in (("train", np.sort(pool)), ("val", val), ("test", test)):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for j, i in enumerate(idx):
            path = f"{split}/{j:06d}.png"
            write_image(folder / "images" / path, render(x[i]), "png")
            rel[int(i)] = path
            rows.append(f"{path} {int(y[i])}\n")
        lines[split] = rows
    for split in ("val", "test"):
        (ann / f"{split}_meta.list").write_text("".join(lines[split]), encoding="utf-8")
    counts = {"val": len(lines["val"]), "test": len(lines["test"])}
    for s in shot_seeds:
        srng = task_rng(seed, f"fewshot/{name}", f"shots-seed{s}")
        order = {int(c): srng.permutation(np.sort(pool[y[pool] == c])) for c in np.unique(y)}
        for k in shots:
            picked = [int(i) for c in sorted(order) for i in order[c][:k]]
            rows = [f"{rel[i]} {int(y[i])}\n" for i in picked]
            fname = f"train_meta.list.num_shot_{k}.seed_{s}"
            (ann / fname).write_text("".join(rows), encoding="utf-8")
            counts[f"train_{k}shot"] = len(rows)
    return counts


def write_fewshot_mini(
    out: str | os.PathLike,
    seed: int = 0,
    datasets: Iterable[str] | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
    shots: Iterable[int] = (1, 2, 4, 8, 16),
    shot_seeds: Iterable[int] = (0, 1, 2),
) -> dict[str, dict[str, int]]:
    """Write fewshot-mini under ``out`` in the NOAH/CoOp annotation layout; each dataset
    folder appears whole or not at all.

    Per class: a train pool of 32 images, 10 val, 100 test, from disjoint source images.
    Split seed S draws its own permutation of each class's pool; K shots are its first K
    (so the K-shot list of a seed contains its smaller-shot lists).
    """
    names = (
        list(registered_tasks("fewshot_mini"))
        if datasets is None
        else [resolve_task("fewshot_mini", d).name for d in datasets]
    )
    shots, shot_seeds = list(shots), list(shot_seeds)
    summary = {}
    for name in progress(names) if progress else names:
        with task_folder(out, name) as tmp:
            summary[name] = _write_dataset(tmp, name, seed, shots, shot_seeds)
    return summary
