"""Data loading: the VTAB-1K loader on synthetic data in the VTAB layout, resized to the
backbone's input, in images/s (set against the training throughput in the report)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from heartbench.bench.stats import PROTOCOL_BATCH


def data_throughput(input_size: int) -> dict[str, Any]:
    import tempfile

    import torch
    from torch.utils.data import DataLoader

    from heartbench.data.synth import write_synth
    from heartbench.data.tasks import get_benchmark
    from heartbench.data.transforms import vtab_transform
    from heartbench.data.vtab import VTABDataset

    size = input_size
    out: dict[str, Any] = {"input_size": size, "batch": PROTOCOL_BATCH, "num_workers": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted({32, size}):
            root = Path(tmp) / f"synth{source}"
            write_synth(root, size=source)
            datasets = [VTABDataset(root, info, "train800val200", vtab_transform(size))
                        for info in get_benchmark("synth").values()]
            seen, start = 0, time.perf_counter()
            while seen < 256 or time.perf_counter() - start < 1.0:
                for ds in datasets:
                    loader = DataLoader(ds, batch_size=PROTOCOL_BATCH, shuffle=True,
                                        num_workers=0, generator=torch.Generator())
                    for images, _ in loader:
                        seen += images.shape[0]
            elapsed = time.perf_counter() - start
            out[f"images_per_s_from_{source}px"] = seen / elapsed
    out["note"] = (f"VTABDataset + vtab_transform({size}) on write_synth JPEGs of 32 px"
                   f" (upscaled) and {size} px, DataLoader num_workers=0 (the default),"
                   " one process; real VTAB images are larger JPEGs than the 32-px ones")
    return out
