"""Image helpers shared by every twin task: pad, resize, crop, and coloured digit stamps.
All images are uint8 arrays, 32x32 RGB when finished."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

SIZE = 32


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
