"""Few-shot data in the NOAH / CoOp annotation layout.

``<root>/<dataset>/annotations/train_meta.list.num_shot_{K}.seed_{S}``, ``val_meta.list``,
``test_meta.list``; lines ``<relative path> <label>`` with paths relative to
``<root>/<dataset>/images/``.

Stanford Cars in its two real layouts: NOAH's folder is ``standford-cars`` (sic; accepted
besides ``stanford-cars``, ``stanford_cars``, ``cars``) and its lines ``cars_train/02766.jpg
13`` resolve against the dataset folder itself (CoOp's ``stanford_cars/cars_train/``); a
copy with ``images/cars_train/`` works too. For every dataset, a list whose first path is
not under ``images/`` but is under the dataset folder resolves against the dataset folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from heartbench.data.tasks import TaskInfo, registered_tasks, resolve_task
from heartbench.data.vtab import ListDataset, check_files_exist, find_folder, parse_list
from heartbench.errors import MissingData, UserError, one_of

FEWSHOT_SPLITS: tuple[str, ...] = ("train", "val", "test")
SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16)
SEEDS: tuple[int, ...] = (0, 1, 2)
FEWSHOT_LAYOUT = (
    "<root>/<dataset>/annotations/train_meta.list.num_shot_<K>.seed_<S> (and val_meta.list,"
    " test_meta.list) with lines '<path under images/> <label>'"
)


def annotation_name(split: str, shots: int | None = None, seed: int | None = None) -> str:
    """File name of one split's annotation list."""
    if split not in FEWSHOT_SPLITS:
        raise one_of("few-shot split", split, FEWSHOT_SPLITS)
    if split == "train":
        if shots is None or seed is None:
            raise UserError("the few-shot train split needs both shots and seed")
        return f"train_meta.list.num_shot_{shots}.seed_{seed}"
    return f"{split}_meta.list"


# Real folder names beyond the registry's aliases: NOAH's misspelt Stanford Cars folder.
EXTRA_FOLDERS: dict[str, tuple[str, ...]] = {"stanford-cars": ("standford-cars",)}


def dataset_dir(root: str | os.PathLike, info: TaskInfo) -> Path:
    """The folder of a dataset under ``root``, accepting any of its alias names."""
    base = Path(root) / info.name
    expected = (f"{base}/annotations/train_meta.list.num_shot_<K>.seed_<S> and {base}/images/")
    extra = EXTRA_FOLDERS.get(info.name, ())
    if extra:
        info = dataclasses.replace(info, aliases=(*info.aliases, *extra))
    return find_folder(root, info, "dataset", FEWSHOT_LAYOUT, expected)


def _images_base(folder: Path, list_path: Path) -> Path:
    """``folder/images`` unless the list's first path exists only under ``folder`` itself."""
    images = folder / "images"
    if list_path.is_file():
        with open(list_path, encoding="utf-8-sig", errors="replace") as fh:
            first = next((line.strip() for line in fh if line.strip()), "")
        rel = first.rsplit(maxsplit=1)[0] if first else ""
        if rel and not (images / rel).exists() and (folder / rel).exists():
            return folder
    return images


def read_fewshot_list(
    root: str | os.PathLike,
    info: TaskInfo,
    split: str,
    shots: int | None = None,
    seed: int | None = None,
) -> list[tuple[Path, int]]:
    """Samples (absolute image path, label) of one split; train needs shots and seed."""
    name = annotation_name(split, shots, seed)
    folder = dataset_dir(root, info)
    list_path = folder / "annotations" / name
    base = _images_base(folder, list_path)
    expected = f"{list_path} with lines '<path under {base}/> <label>'"
    return parse_list(list_path, base, info.num_classes, expected)


class FewShotDataset(ListDataset):
    """One split of a few-shot dataset (``shots`` and ``seed`` pick the train list)."""

    def __init__(
        self,
        root: str | os.PathLike,
        info: TaskInfo,
        split: str,
        shots: int | None = None,
        seed: int | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = info
        self.split = split
        self.shots = shots
        self.seed = seed
        self.transform = transform
        self._set_samples(read_fewshot_list(root, info, split, shots, seed))

    def __repr__(self) -> str:
        extra = f", shots={self.shots}, seed={self.seed}" if self.split == "train" else ""
        return (
            f"FewShotDataset({self.info.benchmark}/{self.info.name}, split={self.split!r}"
            f"{extra}, n={len(self)})"
        )


def validate_fewshot(
    root: str | os.PathLike,
    benchmark: str,
    datasets: Iterable[str] | None = None,
    shots: Iterable[int] = SHOTS,
    seeds: Iterable[int] = SEEDS,
    splits: Iterable[str] = ("train", "test"),
) -> None:
    """Check the annotation lists and images of ``datasets`` before any job runs.

    Same checks as :func:`heartbench.data.vtab.validate_vtab`; the train split is checked
    for every (shots, seed) pair.
    """
    names = list(registered_tasks(benchmark)) if datasets is None else list(datasets)
    shots, seeds, splits = list(shots), list(seeds), list(splits)
    for split in splits:
        annotation_name(split, 1, 0)
    root = Path(root)
    if not root.is_dir():
        raise MissingData(
            f"{benchmark} data root {root} does not exist or is not a folder;"
            f" expected {FEWSHOT_LAYOUT}"
        )
    for name in names:
        info = resolve_task(benchmark, name)
        folder = dataset_dir(root, info)
        for split in splits:
            pairs = [(k, s) for k in shots for s in seeds] if split == "train" else [(None, None)]
            for k, s in pairs:
                list_path = folder / "annotations" / annotation_name(split, k, s)
                check_files_exist(read_fewshot_list(root, info, split, k, s), list_path)
