"""The natural group: classify whole source images (MNIST digits, animal silhouettes,
scikit-learn's 8x8 digits) or which texture photograph a crop comes from."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heartbench.data.twin.common import TaskData, stratified_split
from heartbench.data.twin.images import SIZE, pad_to, resize, to_rgb
from heartbench.data.twin.photos import source_classes
from heartbench.data.twin.sources import animal_silhouettes, mnist_digits, sklearn_digits
from heartbench.data.writing import task_rng

TEXTURE_SOURCES = ["brick", "grass", "gravel"]


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


def build_textures(seed: int) -> TaskData:
    return source_classes("textures", seed, TEXTURE_SOURCES, 1, (0.0625, 0.1875))
