"""A tiny synthetic benchmark in exactly the VTAB-1K layout (real JPEG files).

For smoke tests: three 4-class tasks (one per group), 48 train800 + 16 val200 images
(train800val200 = their 64) and 64 test images. The list files keep VTAB's names although
the counts are smaller. Same seed -> byte-identical lists and images.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from heartbench.data.tasks import get_benchmark, resolve_task

N_TRAIN, N_VAL, N_TEST = 48, 16, 64


def task_rng(seed: int, task: str, salt: str = "") -> np.random.Generator:
    """A generator that depends only on (seed, task, salt): crc32 is stable across runs,
    unlike Python's salted ``hash``."""
    return np.random.default_rng([int(seed), zlib.crc32(f"{task}/{salt}".encode())])


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels as even over the classes as possible, shuffled."""
    return rng.permutation(np.arange(n) % num_classes)


def write_image(path: Path, img: np.ndarray, fmt: str) -> None:
    """Write an HxWx3 (or HxW) uint8 array as PNG or JPEG."""
    pil = Image.fromarray(np.ascontiguousarray(img))
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    if fmt == "jpg":
        # Fixed quality and no optimisation passes keep the bytes reproducible.
        pil.save(path, format="JPEG", quality=95)
    else:
        pil.save(path, format="PNG")


def write_vtab_task(
    out: str | os.PathLike,
    task: str,
    train: Sequence[np.ndarray],
    train_labels: Sequence[int],
    test: Sequence[np.ndarray],
    test_labels: Sequence[int],
    n_train: int,
    fmt: str = "png",
) -> dict[str, int]:
    """Write one task in the VTAB-1K layout and return the line count of each list.

    ``train`` is train800val200 in order: its first ``n_train`` items are train800, the
    rest val200 (as in VTAB, where val200 is the tail of the 1,000 images).
    """
    folder = Path(out) / task
    lines: dict[str, list[str]] = {}
    for split, images, labels in (("train", train, train_labels), ("test", test, test_labels)):
        img_dir = folder / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            rel = f"images/{split}/{i:06d}.{fmt}"
            write_image(folder / rel, img, fmt)
            rows.append(f"{rel} {int(label)}\n")
        lines[split] = rows
    lists = {
        "train800": lines["train"][:n_train],
        "val200": lines["train"][n_train:],
        "train800val200": lines["train"],
        "test": lines["test"],
    }
    for name, rows in lists.items():
        (folder / f"{name}.txt").write_text("".join(rows), encoding="utf-8")
    return {name: len(rows) for name, rows in lists.items()}


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
    """Write the synthetic benchmark under ``out``; returns task -> split -> line count."""
    infos = get_benchmark("synth")
    names = list(infos) if tasks is None else [resolve_task("synth", t).name for t in tasks]
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
        summary[name] = write_vtab_task(
            out, name, train, tv_labels, test, test_labels, N_TRAIN, fmt="jpg"
        )
    return summary
