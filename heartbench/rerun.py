"""A stored record back to its run: the run's settings completed with the legacy values of keys
added since it was stored (:func:`spec_from_record`), the identity its ``run_id`` was hashed from
(:func:`record_identity`, what ``check``'s run-ids section recomputes), and training it again
with no files written (:func:`rerun_record`, what ``check --reproduce`` compares)."""

from __future__ import annotations

from typing import Any

import torch

from heartbench.suite import LEGACY_FEWSHOT_TRAIN, LEGACY_TRAIN, RunSpec
from heartbench.train import train_phase


def spec_from_record(record: dict[str, Any]) -> RunSpec:
    """The record's run, its method config and train keys (suite.LEGACY_TRAIN, few-shot:
    LEGACY_FEWSHOT_TRAIN) completed with the legacy values of keys added after it was
    stored (adapters.base.complete_stored_config)."""
    from heartbench.adapters.base import complete_stored_config
    from heartbench.suite import activate

    activate(record)  # its plugin (unchanged since it ran) and its custom task, first
    fields = RunSpec.__dataclass_fields__
    values = {k: record[k] for k in fields if k in record}
    values["method_config"] = complete_stored_config(record["method"],
                                                     record.get("method_config") or {})
    values["train"] = {**LEGACY_TRAIN, **record["train"]}
    if record.get("shots") is not None:
        values["train"] = {**LEGACY_FEWSHOT_TRAIN, **values["train"]}
    return RunSpec(**values)


# Searched keys (RunSpec.search) of records stored before ``searched_from``: the run's own
# value of the key before the search replaced it with the chosen one (the config default then).
LEGACY_SEARCHED_FROM: dict[str, dict[str, Any]] = {"heart_lora": {"ne": 3}}


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The identity (RunSpec.identity) the record's run_id was hashed from: its stored
    settings completed as :func:`spec_from_record` does, with each searched key back at the
    value it had before the search stored the chosen one (``searched_from``)."""
    spec = spec_from_record(record)
    if spec.search:
        before = record.get("searched_from")
        if before is None:
            legacy = LEGACY_SEARCHED_FROM.get(record["method"], {})
            before = {k: legacy[k] for k in spec.search if k in legacy}
        spec = RunSpec(**{**spec.to_dict(), "method_config": {**spec.method_config, **before}})
    return spec.identity()


def rerun_record(record: dict[str, Any], data_root: str | None = None,
                 progress: bool = False) -> float:
    """Train the run of ``record`` again (no files written) and return its test accuracy
    (``progress``: an epoch bar on a terminal)."""
    spec = spec_from_record(record)
    if data_root is not None:
        spec = RunSpec(**{**spec.to_dict(), "data_root": data_root})
    config = spec.method_config
    threads, before = record.get("threads"), torch.get_num_threads()
    if threads:  # records from before this field ran with torch's default on 2 cores
        torch.set_num_threads(int(threads))
    try:
        result = train_phase(spec, config, "train", "test", ckpt=None, progress=progress)
    finally:
        torch.set_num_threads(before)
    return round(result["acc"], 4)
