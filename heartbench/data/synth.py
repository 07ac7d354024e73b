"""A tiny synthetic benchmark in exactly the VTAB-1K layout (real JPEG files).

For smoke tests: three 4-class tasks (one per group), 48 train800 + 16 val200 images
(train800val200 = their 64) and 64 test images. The list files keep VTAB's names although
the counts are smaller. Same seed -> byte-identical lists and images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np

from heartbench.data.tasks import get_benchmark, registered_tasks, resolve_task
from heartbench.data.twin.writer import task_folder
from heartbench.data.writing import balanced_labels, task_rng, write_vtab_task

N_TRAIN, N_VAL, N_TEST = 48, 16, 64


# ---- the three synthetic tasks -------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(60, 140)
    return np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255)


_COLORS = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 210, 40]], float)


def _colors(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random shape (disc, square or triangle) whose colour is the class."""
    img = _background(rng, size)
    yy, xx = np.mgrid[0:size, 0:size]
    r = rng.uniform(0.18, 0.3) * size
    cy, cx = rng.uniform(r, size - r, 2)
    kind = rng.integers(3)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif kind == 1:
        mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    else:
        mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)
    color = _COLORS[label] + rng.normal(0, 15, 3)
    img[mask] = color
    return img.astype(np.uint8)


def _stripes(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A noisy grating whose orientation (0, 45, 90, 135 degrees) is the class."""
    theta = np.deg2rad(45 * label + rng.normal(0, 4))
    period = rng.uniform(0.15, 0.3) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    wave = np.sin(
        2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 6.3)
    )
    tint = rng.uniform(0.5, 1.0, 3)
    img = 128 + 90 * wave[..., None] * tint + rng.normal(0, 20, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _position(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A bright square inside the quadrant named by the class (TL, TR, BL, BR)."""
    img = _background(rng, size)
    half = size // 2
    side = max(2, int(rng.uniform(0.2, 0.35) * size))
    y0 = (label // 2) * half + rng.integers(0, half - side + 1)
    x0 = (label % 2) * half + rng.integers(0, half - side + 1)
    img[y0 : y0 + side, x0 : x0 + side] = rng.uniform(220, 255)
    return img.astype(np.uint8)


_MAKERS: dict[str, Callable[[int, np.random.Generator, int], np.ndarray]] = {
    "colors": _colors,
    "stripes": _stripes,
    "position": _position,
}


def write_synth(
    out: str | os.PathLike,
    seed: int = 0,
    size: int = 32,
    tasks: Iterable[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Write the synthetic benchmark under ``out``; returns task -> split -> line count.

    Each task appears whole or not at all (``task_folder``)."""
    infos = get_benchmark("synth")
    names = list(registered_tasks("synth")) if tasks is None else [resolve_task("synth", t).name for t in tasks]
    summary = {}
    for name in names:
        info = infos[name]
        rng = task_rng(seed, name)
        make = _MAKERS[name]
        n_tv = N_TRAIN + N_VAL
        tv_labels = balanced_labels(n_tv, info.num_classes, rng)
        test_labels = balanced_labels(N_TEST, info.num_classes, rng)
        train = [make(int(y), rng, size) for y in tv_labels]
        test = [make(int(y), rng, size) for y in test_labels]
        with task_folder(out, name) as tmp:
            summary[name] = write_vtab_task(
                tmp, name, train, tv_labels, test, test_labels, N_TRAIN, fmt="jpg"
            )
    return summary
