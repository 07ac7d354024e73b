"""VTAB-1K data in the layout every public PETL repository uses.

``<root>/<task>/{train800,val200,train800val200,test}.txt``, one line per image:
``images/<split>/000123.jpg <label>``, the path relative to the task folder.

The datasets here are plain map-style datasets (``__len__`` / ``__getitem__``): they work
with ``torch.utils.data.DataLoader`` without this module importing torch, so that the
validation can run in light processes before any job starts.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from PIL import Image

from heartbench.data.tasks import TaskInfo, registered_tasks, resolve_task
from heartbench.errors import MissingData, UserError, one_of, what_is

VTAB_SPLITS: tuple[str, ...] = ("train800", "val200", "train800val200", "test")
VTAB_LAYOUT = (
    "<root>/<task>/train800val200.txt (likewise train800, val200, test) with lines"
    " 'images/x.jpg <label>'"
)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image and return it decoded as RGB (greyscale -> 3 channels).

    A corrupt or truncated file is a UserError naming it (PIL's own message does not).
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"image {path} cannot be decoded ({type(err).__name__}: {err});"
                        " replace or re-extract it") from None


def parse_list(
    list_path: Path, base: Path, num_classes: int, expected: str
) -> list[tuple[Path, int]]:
    """Read ``<relative path> <label>`` lines; paths are resolved against ``base``.

    Raises a one-line UserError naming the file and line for a missing or bad label.
    ``expected`` describes the layout in the message.
    """
    if list_path.exists() and not list_path.is_file():
        raise UserError(f"list file {list_path} {what_is(list_path)}; expected {expected}")
    if not list_path.is_file():
        raise MissingData(f"missing list file {list_path}; expected {expected}")
    samples: list[tuple[Path, int]] = []
    for lineno, raw in list_lines(list_path, expected):
        line = raw.strip()
        if not line:
            continue
        # rsplit: file names may contain spaces, the label never does.
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise UserError(
                f"{list_path} line {lineno}: {line!r} has no label; expected {expected}"
            )
        rel, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise UserError(
                f"{list_path} line {lineno}: label {label_text!r} is not an integer;"
                f" expected {expected}"
            ) from None
        if not 0 <= label < num_classes:
            raise UserError(
                f"{list_path} line {lineno}: label {label} outside [0, {num_classes})"
                f" for a task with {num_classes} classes"
            )
        samples.append((base / rel, label))
    if not samples:
        raise UserError(f"list file {list_path} is empty; expected {expected}")
    return samples


def list_lines(list_path: Path, expected: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a list file: UTF-8, a leading byte-order mark dropped; a line
    that is not UTF-8 is a one-line UserError naming it."""
    with open(list_path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{list_path} line {lineno}: not UTF-8 text (byte"
                                f" {raw[err.start]:#04x} at column {err.start + 1});"
                                f" expected {expected}") from None
            yield lineno, text


def check_files_exist(samples: list[tuple[Path, int]], list_path: Path) -> None:
    """Every listed image must exist (one directory listing per folder, not one stat each)
    and the first must decode."""
    by_dir: dict[Path, list[Path]] = {}
    for path, _ in samples:
        by_dir.setdefault(path.parent, []).append(path)
    for folder, paths in by_dir.items():
        try:
            present = set(os.listdir(folder))
        except OSError:
            raise UserError(
                f"{list_path}: image folder {folder} does not exist (listed image {paths[0]})"
            ) from None
        for path in paths:
            if path.name not in present:
                raise UserError(f"{list_path}: listed image {path} does not exist")
    # One decode per list (cheap, unlike decoding all 73,728): files that are not images at
    # all (a wrong extraction, HTML saved as .jpg) fail here rather than in a worker.
    load_rgb(samples[0][0])


def find_folder(root: str | os.PathLike, info: TaskInfo, what: str, layout: str,
                expected: str) -> Path:
    """The folder of ``info`` under ``root``, accepting any of its alias names.

    ``what`` names the kind of folder (task, dataset), ``layout`` describes the benchmark's whole layout and ``expected`` what the task's
    folder should hold; both go into the one-line error.
    """
    if info.root is not None:  # a task the suite declared, in its own folder
        if not Path(info.root).is_dir():
            raise MissingData(f"task {info.name!r}: its root {info.root} does not exist or is"
                              f" not a folder; expected {info.root}/train800val200.txt and"
                              " test.txt with lines 'images/x.jpg <label>'")
        return Path(info.root)
    root = Path(root)
    if not root.is_dir():
        raise MissingData(
            f"{info.benchmark} data root {root} does not exist or is not a folder;"
            f" expected {layout}"
        )
    for name in info.folder_names:
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(info.folder_names)
    raise MissingData(
        f"no folder for {what} {info.name!r} under {root} (tried {tried}); expected {expected}")


def task_dir(root: str | os.PathLike, info: TaskInfo) -> Path:
    """The folder of a task under ``root``, accepting any of its alias names."""
    expected = f"{Path(root) / info.name}/train800val200.txt with lines 'images/x.jpg <label>'"
    return find_folder(root, info, "task", VTAB_LAYOUT, expected)


def _check_split(split: str) -> None:
    if split not in VTAB_SPLITS:
        raise one_of("VTAB split", split, VTAB_SPLITS)


def read_vtab_list(root: str | os.PathLike, info: TaskInfo, split: str) -> list[tuple[Path, int]]:
    """Samples (absolute image path, label) of one split of one task."""
    _check_split(split)
    folder = task_dir(root, info)
    expected = f"{folder}/{split}.txt with lines 'images/x.jpg <label>'"
    return parse_list(folder / f"{split}.txt", folder, info.num_classes, expected)


# Decoded and transformed images kept across runs of one process (a suite worker trains
# many runs on the same task): (path, mtime, size, transform) -> transform output.
# Host memory is bounded by design: the trainer caches only the training splits (at most
# 1,000 images, read every epoch; 588 MiB at 224 px) and streams val and test (read once
# per run, up to 73,728 images), and the cache never holds more than DECODED_CACHE_BYTES:
# the oldest entries go first.
_DECODED: OrderedDict[tuple[str, int, int, str], Any] = OrderedDict()
DECODED_CACHE_BYTES = 1536 * 2**20
_decoded_bytes = 0


def clear_decoded_cache() -> None:
    global _decoded_bytes
    _DECODED.clear()
    _decoded_bytes = 0


def _nbytes(item: Any) -> int:
    """Bytes held by a cached item (a tensor or array; a PIL image by its pixel data)."""
    if hasattr(item, "nbytes"):
        return int(item.nbytes)
    if hasattr(item, "element_size"):
        return int(item.element_size() * item.nelement())
    if hasattr(item, "size") and hasattr(item, "getbands"):
        return item.size[0] * item.size[1] * len(item.getbands())
    return 0


def _remember(key: tuple[str, int, int, str], item: Any) -> None:
    global _decoded_bytes
    size = _nbytes(item)
    if size > DECODED_CACHE_BYTES:
        return
    _DECODED[key] = item
    _decoded_bytes += size
    while _decoded_bytes > DECODED_CACHE_BYTES:
        _, old = _DECODED.popitem(last=False)
        _decoded_bytes -= _nbytes(old)


class ListDataset:
    """Images and labels read from a list file; opened lazily and converted to RGB.

    ``__getitem__`` returns ``(transform(image), label)``; with ``transform=None`` the PIL
    image itself. Subclasses fill ``samples`` (path, label) from their layout.
    With ``cache=True`` (only for a deterministic transform) each transformed image is
    kept in memory for the life of the process, keyed by file path, mtime and size: the
    VTAB transform has no randomness, so decoding once per worker gives identical tensors.
    """

    info: TaskInfo
    samples: list[tuple[Path, int]]
    transform: Callable[[Image.Image], Any] | None
    cache: bool = False

    def _set_samples(self, samples: list[tuple[Path, int]]) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        if not self.cache:
            return self._load(path), label
        stat = os.stat(path)
        key = (str(path), stat.st_mtime_ns, stat.st_size, self._transform_key)
        item = _DECODED.get(key)
        if item is None:
            item = self._load(path)
            _remember(key, item)
        return item, label

    @cached_property
    def _transform_key(self) -> str:
        # repr of a Compose walks every step: once per dataset, not once per image.
        return repr(self.transform)

    def _load(self, path: Path) -> Any:
        img = load_rgb(path)
        return self.transform(img) if self.transform is not None else img


class VTABDataset(ListDataset):
    """One split of one VTAB-style task; images are opened lazily and converted to RGB.

    ``__getitem__`` returns ``(transform(image), label)``; with ``transform=None`` the PIL
    image itself.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        task_info: TaskInfo,
        split: str,
        transform: Callable[[Image.Image], Any] | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.info = task_info
        self.split = split
        self.transform = transform
        self.cache = cache
        self._set_samples(read_vtab_list(root, task_info, split))

    def __repr__(self) -> str:
        return (
            f"VTABDataset({self.info.benchmark}/{self.info.name}, split={self.split!r},"
            f" n={len(self)})"
        )


def validate_vtab(
    root: str | os.PathLike,
    benchmark: str,
    tasks: Iterable[str] | None = None,
    splits: Iterable[str] = ("train800val200", "test"),
) -> None:
    """Check the data of ``tasks`` (all of the benchmark's when None) before any job runs.

    Raises one UserError naming the path for: a missing root, task folder or list file, a
    line without a label, a non-integer label, a label outside [0, num_classes), or a
    listed image that does not exist.
    """
    names = list(registered_tasks(benchmark)) if tasks is None else list(tasks)
    splits = list(splits)
    for split in splits:
        _check_split(split)
    root = Path(root)
    infos = [resolve_task(benchmark, name) for name in names]
    if not root.is_dir() and any(info.root is None for info in infos):
        raise MissingData(
            f"{benchmark} data root {root} does not exist or is not a folder;"
            f" expected {VTAB_LAYOUT}"
        )
    for name in names:
        info = resolve_task(benchmark, name)
        for split in splits:
            list_path = task_dir(root, info) / f"{split}.txt"
            check_files_exist(read_vtab_list(root, info, split), list_path)
