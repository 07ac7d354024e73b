"""The structured group, derived from real MNIST digits the way VTAB derives its own:
rotate (orientation), count, place (location) and scale."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from heartbench.data.twin.common import N_TEST, N_TRAINVAL, TaskData, stratified_split
from heartbench.data.twin.images import SIZE, digit_stamp, pad_to, random_color, stamp_on, to_rgb
from heartbench.data.twin.sources import mnist_digits
from heartbench.data.writing import balanced_labels, task_rng

ORIENTATION_DIGITS = (2, 3, 4, 5, 7)  # no 0/1/8 (180-degree symmetric) and no 6/9 (swap)
COUNT_SIDE = 10
COUNT_GAP = 2
LOCATION_SIDE = 9
SCALE_SIDES = (8, 12, 16, 20, 24, 28)


def _digit_pools(name: str, seed: int, digits: Iterable[int] | None = None):
    """MNIST indices split 50/50 per class into a train pool and a test pool."""
    x, y = mnist_digits()
    keep = np.flatnonzero(np.isin(y, list(digits))) if digits is not None else np.arange(len(y))
    rng = task_rng(seed, name, "pools")
    half = int(np.unique(y[keep], return_counts=True)[1].min()) // 2
    tr, te = stratified_split(y[keep], [half, -1], rng)
    return x, y, keep[tr], keep[te]


def rotate_digit(digit: np.ndarray, k: int) -> np.ndarray:
    """Digit padded to 32x32, rotated counter-clockwise by k*45 degrees about the centre."""
    img = Image.fromarray(pad_to(digit))
    return np.asarray(img.rotate(45 * k, resample=Image.BILINEAR))


def build_orientation(seed: int) -> TaskData:
    x, _, pool_tr, pool_te = _digit_pools("orientation", seed, ORIENTATION_DIGITS)
    rng = task_rng(seed, "orientation")
    data = TaskData([], [], [], [], [], [])
    for split, n, pool in (("train", N_TRAINVAL, pool_tr), ("test", N_TEST, pool_te)):
        labels = balanced_labels(n, 8, rng)
        src = rng.choice(pool, size=n, replace=len(pool) < n)
        for k, i in zip(labels, src, strict=True):
            getattr(data, split).append(to_rgb(rotate_digit(x[i], int(k))))
            getattr(data, f"{split}_labels").append(int(k))
            getattr(data, f"{split}_sources").append((int(i),))
    return data


def _connected(stamp: np.ndarray) -> bool:
    from scipy.ndimage import label

    return label(stamp > 0, structure=np.ones((3, 3)))[1] == 1


def build_counting(seed: int) -> TaskData:
    """1-4 coloured digits (label = count - 1) at random places, at least COUNT_GAP pixels
    apart; only digits that stay one connected blob at 10 px are used, so the count is
    exactly the number of 8-connected components of the non-black pixels."""
    x, _, pool_tr, pool_te = _digit_pools("counting", seed)
    rng = task_rng(seed, "counting")
    data = TaskData([], [], [], [], [], [])
    for split, n, pool in (("train", N_TRAINVAL, pool_tr), ("test", N_TEST, pool_te)):
        stamps = {int(i): digit_stamp(x[i], COUNT_SIDE) for i in pool}
        pool = np.array([i for i in pool if _connected(stamps[int(i)])])
        labels = balanced_labels(n, 4, rng)
        for lab in labels:
            count = int(lab) + 1
            src = [int(i) for i in rng.choice(pool, size=count, replace=False)]
            while True:
                boxes: list[tuple[int, int, int, int]] = []
                for i in src:
                    sh, sw = stamps[i].shape
                    for _ in range(100):
                        yy = int(rng.integers(0, SIZE - sh + 1))
                        xx = int(rng.integers(0, SIZE - sw + 1))
                        g = COUNT_GAP
                        if all(
                            yy + sh + g <= b[0]
                            or b[0] + b[2] + g <= yy
                            or xx + sw + g <= b[1]
                            or b[1] + b[3] + g <= xx
                            for b in boxes
                        ):
                            boxes.append((yy, xx, sh, sw))
                            break
                if len(boxes) == count:
                    break
            canvas = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
            for i, (yy, xx, _, _) in zip(src, boxes, strict=True):
                stamp_on(canvas, stamps[i], yy, xx, random_color(rng))
            getattr(data, split).append(np.round(canvas).astype(np.uint8))
            getattr(data, f"{split}_labels").append(int(lab))
            getattr(data, f"{split}_sources").append(tuple(src))
    return data


def grid_cell(center: float, cells: int = 3, size: int = SIZE) -> int:
    """Which of ``cells`` equal bands of [0, size) holds a continuous coordinate."""
    return min(cells - 1, int(center * cells / size))


def build_location(seed: int) -> TaskData:
    """One coloured digit whose bounding-box centre lies in the labelled cell of a 3x3 grid
    (label = row * 3 + column)."""
    x, _, pool_tr, pool_te = _digit_pools("location", seed)
    rng = task_rng(seed, "location")
    data = TaskData([], [], [], [], [], [])
    for split, n, pool in (("train", N_TRAINVAL, pool_tr), ("test", N_TEST, pool_te)):
        labels = balanced_labels(n, 9, rng)
        src = rng.choice(pool, size=n, replace=len(pool) < n)
        for lab, i in zip(labels, src, strict=True):
            stamp = digit_stamp(x[i], LOCATION_SIDE)
            sh, sw = stamp.shape
            row, col = divmod(int(lab), 3)
            # Top-left corners whose continuous bbox centre (y + h/2) falls in the cell.
            ys = [v for v in range(SIZE - sh + 1) if grid_cell(v + sh / 2) == row]
            xs = [v for v in range(SIZE - sw + 1) if grid_cell(v + sw / 2) == col]
            canvas = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
            stamp_on(canvas, stamp, int(rng.choice(ys)), int(rng.choice(xs)), random_color(rng))
            getattr(data, split).append(np.round(canvas).astype(np.uint8))
            getattr(data, f"{split}_labels").append(int(lab))
            getattr(data, f"{split}_sources").append((int(i),))
    return data


def build_scale(seed: int) -> TaskData:
    """One coloured digit whose longer side is exactly SCALE_SIDES[label] pixels, anywhere
    on the canvas (the rare digit that digit_stamp cannot bring to size is skipped)."""
    x, _, pool_tr, pool_te = _digit_pools("scale", seed)
    rng = task_rng(seed, "scale")
    data = TaskData([], [], [], [], [], [])
    for split, n, pool in (("train", N_TRAINVAL, pool_tr), ("test", N_TEST, pool_te)):
        labels = balanced_labels(n, len(SCALE_SIDES), rng)
        order = iter(rng.permutation(pool).tolist())
        for lab in labels:
            side = SCALE_SIDES[int(lab)]
            for i in order:
                stamp = digit_stamp(x[i], side)
                if max(stamp.shape) == side:
                    break
            sh, sw = stamp.shape
            yy = int(rng.integers(0, SIZE - sh + 1))
            xx = int(rng.integers(0, SIZE - sw + 1))
            canvas = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
            stamp_on(canvas, stamp, yy, xx, random_color(rng))
            getattr(data, split).append(np.round(canvas).astype(np.uint8))
            getattr(data, f"{split}_labels").append(int(lab))
            getattr(data, f"{split}_sources").append((int(i),))
    return data
