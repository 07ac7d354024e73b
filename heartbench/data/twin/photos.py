"""Square crops of the scikit-image photographs: random placement inside a region, classes
by source photograph, and box means over an integral image (for crop validity and labels)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heartbench.data.twin.common import N_TEST, N_TRAINVAL, TaskData
from heartbench.data.twin.images import SIZE, crop_resize
from heartbench.data.twin.sources import skimage_image
from heartbench.data.writing import balanced_labels, task_rng


def random_crops(
    img: np.ndarray,
    rng: np.random.Generator,
    n: int,
    region: tuple[int, int, int, int],
    sides: tuple[int, int],
    ok: Callable[[int, int, int], bool] | None = None,
) -> list[tuple[int, int, int]]:
    """``n`` random square crops (y, x, side) lying wholly inside ``region`` (r0, r1, c0, c1)."""
    r0, r1, c0, c1 = region
    out: list[tuple[int, int, int]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise RuntimeError("could not place enough crops")
        side = int(rng.integers(sides[0], sides[1] + 1))
        if r1 - r0 < side or c1 - c0 < side:
            continue
        y = int(rng.integers(r0, r1 - side + 1))
        x = int(rng.integers(c0, c1 - side + 1))
        if ok is None or ok(y, x, side):
            out.append((y, x, side))
    return out


def source_classes(
    name: str,
    seed: int,
    sources: list[str],
    split_axis: int,
    side_frac: tuple[float, float],
    valid: dict[str, Callable[[int, int, int], bool]] | None = None,
) -> TaskData:
    """Class = which photograph a crop comes from; train crops from the first half of each
    photograph along ``split_axis`` (0 rows, 1 columns), test crops from the second."""
    rng = task_rng(seed, name)
    valid = valid or {}
    data = TaskData([], [], [], [], [], [])
    for split, n in (("train", N_TRAINVAL), ("test", N_TEST)):
        labels = balanced_labels(n, len(sources), rng)
        counts = np.bincount(labels, minlength=len(sources))
        crops_by_class = {}
        for c, src in enumerate(sources):
            img = skimage_image(src)
            h, w = img.shape[:2]
            lo = min(h, w)
            sides = (max(SIZE, int(side_frac[0] * lo)), max(SIZE, int(side_frac[1] * lo)))
            if split_axis == 0:
                region = (0, h // 2, 0, w) if split == "train" else (h // 2, h, 0, w)
            else:
                region = (0, h, 0, w // 2) if split == "train" else (0, h, w // 2, w)
            crops_by_class[c] = iter(
                random_crops(img, rng, int(counts[c]), region, sides, valid.get(src))
            )
        for c in labels:
            y, x, side = next(crops_by_class[int(c)])
            img = crop_resize(skimage_image(sources[c]), y, x, side)
            getattr(data, split).append(img)
            getattr(data, f"{split}_labels").append(int(c))
            getattr(data, f"{split}_sources").append((sources[c], y, x, side))
    return data


def integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    s[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0), axis=1)
    return s


def box_mean(integral: np.ndarray, y: int, x: int, side: int) -> float:
    s = integral
    total = s[y + side, x + side] - s[y, x + side] - s[y + side, x] + s[y, x]
    return float(total) / (side * side)
