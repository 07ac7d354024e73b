"""Datasets, transforms and task registry. Knows nothing of models or adapters.

Importing this package is cheap (no torch, numpy or PIL): the registry is re-exported
directly, everything else is loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from heartbench.data.tasks import (
    BENCHMARKS,
    GROUPS,
    TaskInfo,
    get_benchmark,
    is_fewshot,
    resolve_task,
)

_LAZY = {
    "VTABDataset": "heartbench.data.vtab",
    "validate_vtab": "heartbench.data.vtab",
    "VTAB_SPLITS": "heartbench.data.vtab",
    "task_dir": "heartbench.data.vtab",
    "FewShotDataset": "heartbench.data.fewshot",
    "validate_fewshot": "heartbench.data.fewshot",
    "FEWSHOT_SPLITS": "heartbench.data.fewshot",
    "vtab_transform": "heartbench.data.transforms",
    "fewshot_train_transform": "heartbench.data.transforms",
    "fewshot_test_transform": "heartbench.data.transforms",
    "IMAGENET_MEAN": "heartbench.data.transforms",
    "IMAGENET_STD": "heartbench.data.transforms",
    "write_synth": "heartbench.data.synth",
    "write_vtab_mini": "heartbench.data.twin",
    "write_fewshot_mini": "heartbench.data.twin",
}

__all__ = [
    "BENCHMARKS",
    "GROUPS",
    "TaskInfo",
    "get_benchmark",
    "is_fewshot",
    "resolve_task",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'heartbench.data' has no attribute {name!r}")
