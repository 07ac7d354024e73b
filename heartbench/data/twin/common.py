"""What a twin task builder returns, and the stratified split every family uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

N_TRAINVAL, N_TRAIN, N_TEST = 1000, 800, 1000


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
