"""The specialized group: crops of scientific photographs (an IHC slide, a fundus photo,
cells, the Hubble deep field, the Moon), labelled by modality, DAB stain or vesselness."""

from __future__ import annotations

import functools

import numpy as np

from heartbench.data.twin.common import N_TEST, N_TRAINVAL, TaskData
from heartbench.data.twin.images import crop_resize, resize
from heartbench.data.twin.photos import box_mean, integral, random_crops, source_classes
from heartbench.data.twin.sources import skimage_image
from heartbench.data.writing import balanced_labels, task_rng

MODALITY_SOURCES = ["immunohistochemistry", "retina", "cell", "hubble_deep_field", "moon"]


@functools.lru_cache(maxsize=1)
def _retina_disc_integral() -> np.ndarray:
    """Integral image of the fundus disc (the photograph is black outside it)."""
    return integral(skimage_image("retina").max(axis=2) > 20)


def build_modality(seed: int) -> TaskData:
    def in_disc(y: int, x: int, side: int) -> bool:
        return box_mean(_retina_disc_integral(), y, x, side) > 0.98

    return source_classes(
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
            ((y, x, side),) = random_crops(img, rng, 1, region, (48, 128))
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
    return half, integral(vessels), integral(disc)


def build_retina(seed: int) -> TaskData:
    """Grade = quintile of mean vesselness in the crop (edges from the train candidates);
    candidates within 3 percentile points of an edge are dropped so grades do not blur."""
    rng = task_rng(seed, "retina")
    half, vess, disc = retina_vessels()
    h, w = half.shape[:2]

    def inside(y: int, x: int, side: int) -> bool:
        return box_mean(disc, y, x, side) > 0.999

    regions = {"train": (0, h // 2, 0, w), "test": (h // 2, h, 0, w)}
    cands = {s: random_crops(half, rng, 12000, r, (48, 96), inside) for s, r in regions.items()}
    feats = {s: np.array([box_mean(vess, *c) for c in cands[s]]) for s in cands}
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
