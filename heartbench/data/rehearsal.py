"""Full-size rehearsal data: VTAB-1K's real split sizes and class counts, synthetic images.

What a paper-scale run meets in memory and time (73,728 dSprites test images, 224 px,
397 SUN classes) without the real data: ``python -m heartbench data synth --full-size
--tasks dsprites_loc,svhn --out DIR``. Each task gets the VTAB-1K layout with 800 + 200
training images and the test-set size of the paper's Table 8; the class count is the
registry's (``vtab1k``; smallNORB elevation has 9, see tasks.py).

The images are cheap on purpose: a flat background and a bright square whose grid cell is
the class, written as small JPEG files (about 3 KB at 224 px), so that 73,728 of them take
minutes and a few hundred MB. They are written one at a time (never held in memory), into
a hidden folder renamed into place when the task is complete (``task_folder``): a stopped
command leaves no half-written task.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from heartbench.data import writing
from heartbench.data.tasks import get_benchmark, resolve_task
from heartbench.data.twin.writer import task_folder
from heartbench.data.writing import task_rng
from heartbench.errors import UserError

# Test-set sizes of the paper's Table 8 (train800val200 is 1,000 images for every task).
TEST_SIZES: dict[str, int] = {
    "cifar": 10_000, "caltech101": 6_084, "dtd": 1_880, "oxford_flowers102": 6_149,
    "oxford_iiit_pet": 3_669, "svhn": 26_032, "sun397": 21_750, "patch_camelyon": 32_768,
    "eurosat": 5_400, "resisc45": 6_300, "diabetic_retinopathy": 42_670,
    "clevr_count": 15_000, "clevr_dist": 15_000, "dmlab": 22_735, "kitti": 711,
    "dsprites_loc": 73_728, "dsprites_ori": 73_728, "smallnorb_azi": 12_150,
    "smallnorb_ele": 12_150,
}
N_TRAIN, N_VAL = 800, 200
JPEG_QUALITY = 85


def _image(label: int, num_classes: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A flat grey image with a bright square in the grid cell of ``label``."""
    grid = math.ceil(math.sqrt(num_classes))
    cell = size // grid
    side = max(2, cell // 2)
    img = np.full((size, size, 3), int(rng.integers(40, 120)), np.uint8)
    y0 = (label // grid) * cell + int(rng.integers(0, cell - side + 1))
    x0 = (label % grid) * cell + int(rng.integers(0, cell - side + 1))
    img[y0:y0 + side, x0:x0 + side] = rng.integers(180, 256, 3, dtype=np.uint8)
    return img


def _write_split(folder: Path, split: str, n: int, num_classes: int, rng: np.random.Generator,
                 size: int) -> list[str]:
    img_dir = folder / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.arange(n) % num_classes)
    rows = []
    for i, label in enumerate(labels):
        rel = f"images/{split}/{i:06d}.jpg"
        writing.write_image(folder / rel, _image(int(label), num_classes, rng, size), "jpg",
                            quality=JPEG_QUALITY)
        rows.append(f"{rel} {int(label)}\n")
    return rows


def write_fullsize(out: str | os.PathLike, tasks: Iterable[str], seed: int = 0, size: int = 224,
                   max_test: int | None = None,
                   progress: Callable[[Iterable[str]], Iterable[str]] | None = None
                   ) -> dict[str, dict[str, int]]:
    """Write ``tasks`` (vtab1k names or aliases) under ``out``; task -> split -> line count.

    ``max_test`` caps the test split (for a small-test comparison run); None keeps Table 8's.
    """
    names = [resolve_task("vtab1k", t).name for t in tasks]
    if not names:
        raise UserError("--full-size needs --tasks: a comma-separated list of VTAB-1K tasks")
    if max_test is not None and max_test < 1:
        raise UserError(f"--max-test must be >= 1, got {max_test}")
    infos = get_benchmark("vtab1k")
    summary = {}
    for name in (progress(names) if progress else names):
        classes = infos[name].num_classes
        n_test = TEST_SIZES[name] if max_test is None else min(max_test, TEST_SIZES[name])
        with task_folder(out, name) as tmp:
            folder = tmp / name
            train = _write_split(folder, "train", N_TRAIN + N_VAL, classes,
                                 task_rng(seed, name, "train"), size)
            test = _write_split(folder, "test", n_test, classes, task_rng(seed, name, "test"),
                                size)
            lists = {"train800": train[:N_TRAIN], "val200": train[N_TRAIN:],
                     "train800val200": train, "test": test}
            for split, rows in lists.items():
                (folder / f"{split}.txt").write_text("".join(rows), encoding="utf-8")
        summary[name] = {split: len(rows) for split, rows in lists.items()}
    return summary
