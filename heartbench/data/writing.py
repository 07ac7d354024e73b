"""Writing generated datasets: stable per-task random streams, balanced labels, images and
the VTAB-1K list layout. Shared by the synthetic benchmark (``synth.py``), the CPU twin's
builders (``data/twin/``) and the full-size rehearsal data (``rehearsal.py``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def task_rng(seed: int, task: str, salt: str = "") -> np.random.Generator:
    """A generator that depends only on (seed, task, salt): crc32 is stable across runs,
    unlike Python's salted ``hash``."""
    return np.random.default_rng([int(seed), zlib.crc32(f"{task}/{salt}".encode())])


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels as even over the classes as possible, shuffled."""
    return rng.permutation(np.arange(n) % num_classes)


def write_image(path: Path, img: np.ndarray, fmt: str, quality: int = 95) -> None:
    """Write an HxWx3 (or HxW) uint8 array as PNG or JPEG (at ``quality``)."""
    pil = Image.fromarray(np.ascontiguousarray(img))
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    if fmt == "jpg":
        # Fixed quality and no optimisation passes keep the bytes reproducible.
        pil.save(path, format="JPEG", quality=quality)
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

    This writes ``out/<task>`` in place: callers write into ``task_folder``'s temporary
    folder (``data/twin/writer.py``) so that the task appears whole or not at all.

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
