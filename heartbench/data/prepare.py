"""``data prepare vtab1k``: build the standard VTAB-1K copy from TFDS, as NOAH's get_vtab1k.py.

For each of the 19 configurations (``manifest.VTAB1K``): the TFDS builder at the pinned
major version (exact for dmlab and kitti, as task_adaptation), the four task_adaptation
split strings, its label function, and every example written as an RGB image
``<out>/<task>/images/<list>/%06d.jpg`` (PIL's default quality 75, as NOAH; ``--format
png`` keeps pixels exact, NOAH #28/PR #29) with ``<out>/<task>/<list>.txt``. Each task is
written into a hidden folder and renamed into place when complete (``task_folder``), so a
stopped build leaves no half-written task and replaces an older copy only with a finished
one. What was built and how is recorded in ``<out>/heartbench-prepare.json``; ``verify``
runs at the end.

TensorFlow Datasets is optional (``pip install 'heartbench[tfds]'``) and imported only
here; the label functions, the slicing and the writer work on plain example dicts, which
is how the tests exercise them offline.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from heartbench.data.manifest import VTAB1K, VTAB_LISTS, VtabTask
from heartbench.data.twin.writer import task_folder
from heartbench.errors import UserError

Example = dict[str, Any]
Source = Callable[[str], Iterable[Example]]  # TFDS split string -> examples in order
RECORD_FILE = "heartbench-prepare.json"
JPEG_QUALITY = 75  # PIL's default, which NOAH's Image.save(...jpg) uses
EXACT_VERSION = ("dmlab", "kitti")  # task_adaptation pins these exactly, the rest by major


# ---------------------------------------------------------------------------
# Label functions (task_adaptation's preprocess functions, on numpy example dicts)
# ---------------------------------------------------------------------------
def _label(ex: Example) -> int:
    return int(ex["label"])


def _clevr_count_all(ex: Example) -> int:
    """clevr.py _count_preprocess_fn: number of objects - 3 (3..10 objects -> 0..7)."""
    return int(np.size(ex["objects"]["size"])) - 3


def _threshold_bin(value: float, thresholds: np.ndarray) -> int:
    """``reduce_max(where(thrs - value < 0))``: the last threshold below ``value``."""
    below = np.nonzero((thresholds - value) < 0)[0]
    return int(below.max())


def _clevr_closest_object_distance(ex: Example) -> int:
    """clevr.py _closest_object_preprocess_fn: depth of the nearest object, 6 bins."""
    dist = np.min(np.asarray(ex["objects"]["pixel_coords"])[:, 2])
    return _threshold_bin(dist, np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0]))


def _kitti_closest_vehicle_distance(ex: Example) -> int:
    """kitti.py _closest_vehicle_distance_pp: nearest Car/Van/Truck, 3 bins + none."""
    types = np.asarray(ex["objects"]["type"])
    z = np.asarray(ex["objects"]["location"], dtype=np.float32).reshape(-1, 3)[:, 2]
    dist = np.min(np.concatenate([z[types < 3], np.array([1000.0], np.float32)]))
    return _threshold_bin(dist, np.array([-100.0, 8.0, 20.0, 999.0]))


def _smallnorb(ex: Example, attribute: str) -> int:
    return int(ex[attribute])


def _dsprites(ex: Example, attribute: str, original_classes: int, num_classes: int) -> int:
    """dsprites.py: floordiv(float32(value), original/num_classes), neighbours grouped."""
    factor = np.float32(float(original_classes) / num_classes)
    return int(np.floor_divide(np.float32(ex[attribute]), factor))


LABEL_FNS: dict[str, Callable[..., int]] = {
    "label": _label,
    "clevr_count_all": _clevr_count_all,
    "clevr_closest_object_distance": _clevr_closest_object_distance,
    "kitti_closest_vehicle_distance": _kitti_closest_vehicle_distance,
    "smallnorb": _smallnorb,
    "dsprites": _dsprites,
}


def label_of(task: VtabTask, ex: Example) -> int:
    args = dict(task.label_args)
    if task.label_fn == "dsprites":
        args["num_classes"] = task.num_classes
    return LABEL_FNS[task.label_fn](ex, **args)


def image_of(task: VtabTask, ex: Example) -> np.ndarray:
    """HxWx3 uint8: smallNORB and dSprites tiled to 3 channels, dSprites' {0,1} x 255."""
    img = np.asarray(ex["image"])
    if task.label_fn == "dsprites":
        img = img * 255
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.tile(img, (1, 1, 3))
    return img.astype(np.uint8)


# ---------------------------------------------------------------------------
# TFDS split strings ("train[:800]+validation[:200]", "test[50%:]")
# ---------------------------------------------------------------------------
_PART = re.compile(r"^(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$")


def _bound(text: str, percent: bool, n: int, default: int) -> int:
    if text == "":
        return default
    value = int(text)
    if percent:  # TFDS rounds percent boundaries to the closest example
        value = int(math.floor(value * n / 100 + 0.5)) if value >= 0 else \
            -int(math.floor(-value * n / 100 + 0.5))
    return max(0, min(n, value + n if value < 0 else value))


def parse_split(spec: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    """(TFDS split, start, stop) for each '+'-joined part of a split string."""
    parts = []
    for part in spec.split("+"):
        m = _PART.match(part.strip())
        if not m or m.group(1) not in sizes:
            raise ValueError(f"cannot read split {part!r} of {spec!r} (splits: {sorted(sizes)})")
        name, lo, lo_pct, hi, hi_pct = m.groups()
        n = sizes[name]
        if lo is None:
            parts.append((name, 0, n))
        else:
            parts.append((name, _bound(lo, lo_pct == "%", n, 0), _bound(hi, hi_pct == "%", n, n)))
    return parts


def split_count(spec: str, sizes: dict[str, int]) -> int:
    return sum(stop - start for _, start, stop in parse_split(spec, sizes))


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------
def save_image(img: np.ndarray, path: Path, fmt: str) -> None:
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(img)).convert("RGB")
    if fmt == "jpg":
        pil.save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        pil.save(path, format="PNG")


def write_list(folder: Path, name: str, items: Iterable[tuple[np.ndarray, int]], fmt: str
               ) -> int:
    """Write one list's images under images/<name>/ and then <name>.txt; return its size.

    In place: ``prepare_task`` calls it inside the task's temporary folder.
    """
    img_dir = folder / "images" / name
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (img, label) in enumerate(items):
        rel = f"images/{name}/{i:06d}.{fmt}"
        save_image(img, folder / rel, fmt)
        lines.append(f"{rel} {label}\n")
    (folder / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
    return len(lines)


def prepare_task(out: str | os.PathLike, task: VtabTask, source: Source, fmt: str = "jpg",
                 progress: Callable[[Iterable[Any], str, int], Iterable[Any]] | None = None
                 ) -> dict[str, int]:
    """Write one task's four lists from ``source``; return each list's line count.

    The task appears whole or not at all: it is written into ``task_folder``'s hidden
    folder and renamed to ``<out>/<task>`` when its four lists are complete."""
    if fmt not in ("jpg", "png"):
        raise UserError(f"image format {fmt!r} is not supported; expected jpg or png")
    counts = {}
    with task_folder(out, task.name) as tmp:
        folder = tmp / task.name
        for name in VTAB_LISTS:
            spec = task.splits[name]
            items: Iterator[tuple[np.ndarray, int]] = (
                (image_of(task, ex), label_of(task, ex)) for ex in source(spec))
            if progress is not None:
                items = iter(progress(items, f"{task.name}/{name}",
                                      split_count(spec, task.tfds_sizes)))
            counts[name] = write_list(folder, name, items, fmt)
    return counts


def fake_source(sizes: dict[str, int], make: Callable[[str, int], Example]) -> Source:
    """A TFDS stand-in: ``make(split, index)`` gives example ``index`` of ``split``."""
    def source(spec: str) -> Iterator[Example]:
        for split, start, stop in parse_split(spec, sizes):
            for i in range(start, stop):
                yield make(split, i)
    return source


def write_record(out: Path, entries: dict[str, dict[str, Any]], fmt: str) -> Path:
    """Merge what was built into ``<out>/heartbench-prepare.json``."""
    from heartbench.data.verify import write_json

    path = out / RECORD_FILE
    record: dict[str, Any] = {"tasks": {}}
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass
    record.setdefault("tasks", {}).update(entries)
    record.update(kind="heartbench prepare record", reference="NOAH data/vtab-source/"
                  "get_vtab1k.py with task_adaptation's data modules",
                  image_format=fmt, jpeg_quality=JPEG_QUALITY if fmt == "jpg" else None,
                  updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(path, record)
    return path


def task_entry(task: VtabTask, counts: dict[str, int], resolved: str, tfds_version: str,
               fmt: str) -> dict[str, Any]:
    return {"tfds_name": task.tfds_name, "tfds_version": resolved,
            "pinned_version": task.tfds_version, "tensorflow_datasets": tfds_version,
            "splits": task.splits, "label_fn": task.label_fn, "label_args": task.label_args,
            "num_classes": task.num_classes, "counts": counts, "image_format": fmt}


# ---------------------------------------------------------------------------
# The real thing: TFDS (needs internet, and manual downloads for two tasks)
# ---------------------------------------------------------------------------
def import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("data prepare needs TensorFlow Datasets, an optional extra: pip install"
                        " 'heartbench[tfds]' (tensorflow, tensorflow-datasets, opencv)") from None
    return tfds


def version_request(task: VtabTask) -> str:
    if task.name in EXACT_VERSION:
        return task.tfds_version
    return task.tfds_version.split(".")[0] + ".*.*"


def check_manual(task: VtabTask, manual_root: Path) -> Path | None:
    """The manual-download folder of ``task``; one line saying what to do when it is empty."""
    if task.manual is None:
        return None
    folder = manual_root / task.tfds_name.split("/")[0]
    if not folder.is_dir() or not any(folder.iterdir()):
        raise UserError(f"{task.name}: TFDS cannot download {task.tfds_name} itself:"
                        f" {task.manual.format(manual_dir=folder)}; then rerun data prepare")
    return folder


def trap_message(task: VtabTask, err: BaseException, stage: str) -> str:
    """One line for a TFDS failure, naming the known trap and its fix where there is one."""
    text = " ".join(str(err).split())[:300] or type(err).__name__
    if task.trap and ("decode" in text.lower() or "version" in text.lower()
                      or task.name == "kitti"):
        return f"{task.name}: {stage} failed ({type(err).__name__}: {text}); {task.trap}"
    if task.manual and ("manual" in text.lower() or "download" in text.lower()):
        return f"{task.name}: {stage} failed ({text}); {task.manual.format(manual_dir='the manual_dir')}"
    return f"{task.name}: {stage} failed ({type(err).__name__}: {text})"


def check_sizes(task: VtabTask, actual: dict[str, int], resolved: str) -> None:
    """The built TFDS splits give the standard lists: the splits whose size places a slice
    boundary (``train[45000:45200]``, ``test[50%:]``) have the pinned size, and every list
    has the manifest's length (Table 8's test size)."""
    where = f"{task.name}: TFDS {task.tfds_name}:{resolved}"
    pinned = f"the standard copy was built from version {task.tfds_version}"
    offsets = {part[0] for spec in task.splits.values()
               for part in parse_split(spec, task.tfds_sizes) if part[1] > 0}
    diff = {k: (actual.get(k), task.tfds_sizes[k]) for k in sorted(offsets)
            if actual.get(k) != task.tfds_sizes[k]}
    if diff:
        shown = ", ".join(f"{k} {a} (expected {e})" for k, (a, e) in diff.items())
        raise UserError(f"{where} has split sizes {shown}; {pinned}")
    counts: dict[str, int | None] = {}
    for name, spec in task.splits.items():
        try:
            counts[name] = split_count(spec, actual)
        except ValueError:  # a split this TFDS version does not have
            counts[name] = None
    wrong = {k: (counts.get(k), n) for k, n in task.counts.items() if counts.get(k) != n}
    if wrong:
        shown = ", ".join(f"{k} {a} (expected {e})" for k, (a, e) in wrong.items())
        raise UserError(f"{where} gives lists of {shown}; {pinned}")


def tfds_source(task: VtabTask, data_dir: Path, manual_root: Path) -> tuple[Source, str, str]:
    """(source, resolved dataset version, tensorflow_datasets version) for one task."""
    tfds = import_tfds()
    manual = check_manual(task, manual_root)
    name = f"{task.tfds_name}:{version_request(task)}"
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
        config = tfds.download.DownloadConfig(manual_dir=str(manual) if manual else None)
        builder.download_and_prepare(download_config=config)
    except UserError:
        raise
    except Exception as err:  # TFDS raises assorted errors: each becomes one line
        raise UserError(trap_message(task, err, f"building {name}")) from None
    resolved = str(builder.info.version)
    check_sizes(task, {k: v.num_examples for k, v in builder.info.splits.items()}, resolved)

    def source(spec: str) -> Iterable[Example]:
        return tfds.as_numpy(builder.as_dataset(split=spec, shuffle_files=False))

    return source, resolved, tfds.__version__


def prepare_vtab1k(out: str | os.PathLike, tasks: Iterable[str] | None = None,
                   fmt: str = "jpg", data_dir: str | os.PathLike | None = None,
                   manual_dir: str | os.PathLike | None = None,
                   progress: Callable[[Iterable[Any], str, int], Iterable[Any]] | None = None
                   ) -> dict[str, dict[str, int]]:
    """Build the requested tasks (all 19 by default) under ``out``; return their counts."""
    from heartbench.data.tasks import resolve_task

    out = Path(out)
    names = list(VTAB1K) if tasks is None else [resolve_task("vtab1k", t).name for t in tasks]
    data_dir = Path(data_dir) if data_dir else out / ".tfds"
    manual_root = Path(manual_dir) if manual_dir else data_dir / "manual"
    import_tfds()  # fail before creating anything when TFDS is missing
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in names:
        task = VTAB1K[name]
        source, resolved, tfds_version = tfds_source(task, data_dir, manual_root)
        summary[name] = prepare_task(out, task, source, fmt, progress)
        write_record(out, {name: task_entry(task, summary[name], resolved, tfds_version, fmt)},
                     fmt)
    return summary
