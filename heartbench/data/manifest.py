"""What the standard VTAB-1K and few-shot copies contain: the manifest ``data verify`` checks.

Pure data, no imports beyond the standard library: ``run``'s pre-submission checks read it.

Where the numbers come from (``SOURCES`` names them per field):
- test sizes and class counts: the paper's Table 8 (smallNORB elevation has 9 classes, not
  Table 8's 18: smallNORB has 9 elevations, see ``tasks.py``);
- TFDS names, split slices and label functions: Google's task_adaptation data modules as
  vendored in NOAH's repository (``data/vtab-source/task_adaptation/data/*.py``), run by
  NOAH's ``data/vtab-source/get_vtab1k.py`` (the 19 configurations, one image folder per
  list: ``images/<list>/%06d.jpg``, saved with PIL's defaults: JPEG quality 75);
- pinned TFDS versions: KMnP/vpt ``VTAB_SETUP.md`` (tfds 4.4.0; kitti 3.2.0 because 3.1.0
  no longer builds, google-research/task_adaptation#18);
- TFDS split sizes of those versions: the TFDS catalogue; each test size they imply through
  the task_adaptation slices equals Table 8's (``tests/test_prepare.py`` recomputes it).
  ``prepare`` enforces only what decides the lists: the sizes of splits sliced at an
  offset (cifar's train[45000:45200] needs train = 50,000) and the resulting list lengths.
- few-shot: the paper's Table 8 (val and test sizes, shots x classes), NOAH's annotation
  lists (``data/few-shot/<dataset>/annotations``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VTAB_LISTS: tuple[str, ...] = ("train800", "val200", "train800val200", "test")

SOURCES: dict[str, str] = {
    "test": "paper Table 8 (test column)",
    "num_classes": "paper Table 8 (#Classes); smallnorb_ele 9 (smallNORB has 9 elevations)",
    "train800/val200/train800val200": "task_adaptation: train[:800], first 200 of the val slice",
    "splits": "task_adaptation data modules in ZhangYuanhan-AI/NOAH data/vtab-source",
    "tfds_version": "KMnP/vpt VTAB_SETUP.md (tfds 4.4.0+nightly)",
    "tfds_sizes": "TFDS catalogue for the pinned versions (not checkable offline: prepare"
                  " enforces only the sizes that place a slice boundary and the list lengths)",
    "label_fn": "task_adaptation preprocess functions (clevr.py, kitti.py, dsprites.py,"
                " smallnorb.py)",
    "image_format": "NOAH get_vtab1k.py: PIL Image.save(.jpg), quality 75 (PIL default), RGB",
}


@dataclass(frozen=True)
class VtabTask:
    """One VTAB-1K task as ``get_vtab1k.py`` builds it from TFDS."""

    name: str
    tfds_name: str  # builder name, with config where there is one
    tfds_version: str
    tfds_sizes: dict[str, int]  # TFDS split -> examples in the pinned version
    splits: dict[str, str]  # list -> TFDS split string (task_adaptation)
    num_classes: int
    test: int
    label_fn: str  # key of prepare.LABEL_FNS
    label_args: dict[str, Any] = field(default_factory=dict)
    manual: str | None = None  # what to download by hand, if TFDS cannot
    trap: str | None = None  # a known problem building it, and what to do
    duplicates_ok: str | None = None  # why identical train/test images are expected

    @property
    def counts(self) -> dict[str, int]:
        return {"train800": 800, "val200": 200, "train800val200": 1000, "test": self.test}


def _splits(val: str, test: str, train: str = "train") -> dict[str, str]:
    """task_adaptation's four VTAB-1K splits from its val slice start and test slice."""
    return {"train800": f"{train}[:800]", "val200": val,
            "train800val200": f"{train}[:800]+{val}", "test": test}


def _from_train(start: int, test: str = "test") -> dict[str, str]:
    """Tasks whose val slice is carved from TFDS train (90 % / 60 % / 80 % splits)."""
    return _splits(f"train[{start}:{start + 200}]", test)


_VAL = _splits("validation[:200]", "test")

_DSPRITES_DUPS = ("dSprites squares and ellipses are symmetric: rotations of one shape give"
                  " byte-identical images, some of which fall in train and test")

_TASKS: list[VtabTask] = [
    VtabTask("cifar", "cifar100", "3.0.2", {"train": 50000, "test": 10000},
             _from_train(45000), 100, 10000, "label"),
    VtabTask("caltech101", "caltech101", "3.0.1", {"train": 3060, "test": 6084},
             _from_train(2754), 102, 6084, "label"),
    VtabTask("dtd", "dtd", "3.0.1", {"train": 1880, "validation": 1880, "test": 1880},
             _VAL, 47, 1880, "label"),
    VtabTask("oxford_flowers102", "oxford_flowers102", "2.1.1",
             {"train": 1020, "validation": 1020, "test": 6149}, _VAL, 102, 6149, "label"),
    VtabTask("oxford_iiit_pet", "oxford_iiit_pet", "3.2.0", {"train": 3680, "test": 3669},
             _from_train(3312), 37, 3669, "label"),
    VtabTask("svhn", "svhn_cropped", "3.0.0", {"train": 73257, "test": 26032},
             _from_train(65931), 10, 26032, "label"),
    VtabTask("sun397", "sun397/tfds", "4.0.0",
             {"train": 76128, "validation": 10875, "test": 21750}, _VAL, 397, 21750, "label",
             trap="TFDS cannot decode one SUN397 image (tensorflow/datasets#2889): make TFDS"
                  " skip it (VTAB_SETUP.md: edit tensorflow_datasets/image_classification/"
                  "sun.py to ignore /t/track/outdoor/sun_aophkoiosslinihb.jpg) and rerun"),
    VtabTask("patch_camelyon", "patch_camelyon", "2.0.0",
             {"train": 262144, "validation": 32768, "test": 32768}, _VAL, 2, 32768, "label"),
    VtabTask("eurosat", "eurosat/rgb", "2.0.0", {"train": 27000},
             _from_train(16200, "train[21600:]"), 10, 5400, "label"),
    VtabTask("resisc45", "resisc45", "3.0.0", {"train": 31500},
             _from_train(18900, "train[25200:]"), 45, 6300, "label",
             manual="download NWPU-RESISC45.rar (OneDrive link in the TFDS resisc45 page,"
                    " tensorflow/datasets#5108) and extract it into {manual_dir}"),
    VtabTask("diabetic_retinopathy", "diabetic_retinopathy_detection/btgraham-300", "3.0.0",
             {"train": 35126, "validation": 10906, "test": 42670}, _VAL, 5, 42670, "label",
             manual="download the Kaggle diabetic-retinopathy-detection files into"
                    " {manual_dir} (check that all five parts train.zip.001 to train.zip.005"
                    " are there: the last often goes missing), then 'cat train.zip.* > train.zip' and 'cat test.zip.* >"
                    " test.zip'"),
    VtabTask("clevr_count", "clevr", "3.1.0",
             {"train": 70000, "validation": 15000, "test": 15000},
             _from_train(63000, "validation"), 8, 15000, "clevr_count_all"),
    VtabTask("clevr_dist", "clevr", "3.1.0",
             {"train": 70000, "validation": 15000, "test": 15000},
             _from_train(63000, "validation"), 6, 15000, "clevr_closest_object_distance"),
    VtabTask("dmlab", "dmlab", "2.0.1",
             {"train": 65550, "validation": 22628, "test": 22735}, _VAL, 6, 22735, "label"),
    VtabTask("kitti", "kitti", "3.2.0", {"train": 6347, "validation": 423, "test": 711},
             _VAL, 4, 711, "kitti_closest_vehicle_distance",
             trap="kitti 3.1.0 (task_adaptation's pin) no longer builds; heartbench pins 3.2.0"
                  " (same data, google-research/task_adaptation#18): install a"
                  " tensorflow-datasets that has kitti 3.2.0 (4.4.0 or newer)"),
    VtabTask("dsprites_loc", "dsprites", "2.0.0", {"train": 737280},
             _from_train(589824, "train[663552:]"), 16, 73728, "dsprites",
             {"attribute": "label_x_position", "original_classes": 32},
             duplicates_ok=_DSPRITES_DUPS),
    VtabTask("dsprites_ori", "dsprites", "2.0.0", {"train": 737280},
             _from_train(589824, "train[663552:]"), 16, 73728, "dsprites",
             {"attribute": "label_orientation", "original_classes": 40},
             duplicates_ok=_DSPRITES_DUPS),
    VtabTask("smallnorb_azi", "smallnorb", "2.0.0", {"train": 24300, "test": 24300},
             _splits("test[:200]", "test[50%:]"), 18, 12150, "smallnorb",
             {"attribute": "label_azimuth"}),
    VtabTask("smallnorb_ele", "smallnorb", "2.0.0", {"train": 24300, "test": 24300},
             _splits("test[:200]", "test[50%:]"), 9, 12150, "smallnorb",
             {"attribute": "label_elevation"}),
]

VTAB1K: dict[str, VtabTask] = {t.name: t for t in _TASKS}


@dataclass(frozen=True)
class FewShotDataset:
    """One few-shot dataset: train lists of shots x classes lines, fixed val and test."""

    name: str
    num_classes: int
    val: int
    test: int

    def counts(self, shots: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict[str, int]:
        out = {f"train_{k}shot": k * self.num_classes for k in shots}
        return {**out, "val": self.val, "test": self.test}


FEWSHOT_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16)
FEWSHOT_SEEDS: tuple[int, ...] = (0, 1, 2)

FEWSHOT: dict[str, FewShotDataset] = {d.name: d for d in [
    FewShotDataset("fgvc-aircraft", 100, 3333, 3333),
    FewShotDataset("food-101", 101, 20200, 30300),
    FewShotDataset("oxford-flowers102", 102, 1633, 2463),
    FewShotDataset("oxford-pets", 37, 736, 3669),
    FewShotDataset("stanford-cars", 196, 1635, 8041),
]}

# The benchmarks whose copies must match this manifest; the CPU twins have their own sizes.
MANIFEST_BENCHMARKS: tuple[str, ...] = ("vtab1k", "fewshot")
