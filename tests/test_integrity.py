"""Wrong results that look right (issue 24, items 1-6): what a table averages, what a record
and its adapter must be to count as done, what figure5 accepts.

Table and record tests need no torch; the training and figure5 tests build the tiny vit_test
backbone (seconds)."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path

from heartbench.report import stats

ROOT = Path(__file__).resolve().parents[1]


def record(task: str = "animals", label: str = "LoRA", method: str = "lora", seed: int = 0,
           acc: float | None = 70.0, epochs: int = 3, backbone: str = "vit_mini",
           suite: str = "vtab_mini", config: dict | None = None, extra: dict | None = None
           ) -> dict:
    """A done VTAB-mini record whose run_id hashes everything here (so two differ)."""
    group = {"animals": "natural", "mnist": "natural", "histology": "specialized",
             "counting": "structured"}[task]
    train = {"epochs": epochs, "lr": 0.005, "warmup_epochs": 1, "batch_size": 64}
    ident = [task, label, method, seed, epochs, backbone, suite, config]
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    out = {
        "schema": 1, "run_id": run_id, "status": "done", "suite": suite,
        "benchmark": "vtab_mini", "task": task, "group": group, "shots": None,
        "method": method, "label": label, "method_config": dict(config or {"rank": 8}),
        "grid": {}, "search": {}, "num_classes": 10,
        "backbone": {"name": backbone, "weights": None, "kwargs": {}, "drop_path_rate": 0.1},
        "train": train, "seed": seed, "eval_protocol": "last",
        "metrics": {"test_acc": acc, "val_acc": None, "history": []}, "heart": None,
        "adapter": {"stored_bytes": 1000, "head_bytes": 10, "trainable_params": 10,
                    "file": f"{run_id}.safetensors"},
    }
    out.update(extra or {})
    return out


def cells(records: list[dict]) -> dict[tuple[int, str, str], tuple[float, int]]:
    """(table, row name, task) -> (mean, seeds) over every measured block."""
    out = {}
    for block in stats.build_blocks(records):
        for row in block.rows:
            for task, cell in row.cells.items():
                out[(block.table, row.name, task)] = (cell.mean, cell.n)
    return out


# ---------------------------------------------------------------------------
# 1. A cell averages only records that agree on everything but the seed
# ---------------------------------------------------------------------------
def test_cell_never_averages_two_training_lengths():
    short, long = record(acc=45.3, epochs=3), record(acc=98.4, epochs=40)
    got = cells([short, long])
    table1 = {k: v for k, v in got.items() if k[0] == 1}
    # Two rows, each its own record: never the mean 71.85 printed as one seed-0 cell.
    assert sorted(table1.values()) == [(45.3, 1), (98.4, 1)]
    assert not any(math.isclose(m, (45.3 + 98.4) / 2) for m, _ in got.values())
    names = {k[1] for k in table1}
    assert names == {"LoRA [epochs 3]", "LoRA [epochs 40]"}


def test_cell_never_averages_two_backbones():
    got = cells([record(acc=30.0, backbone="vit_test"), record(acc=60.0, backbone="vit_mini")])
    table1 = {k: v for k, v in got.items() if k[0] == 1}
    assert sorted(table1.values()) == [(30.0, 1), (60.0, 1)]
    assert {k[1] for k in table1} == {"LoRA [backbone vit_mini]", "LoRA [backbone vit_test]"}


def test_a_foreign_record_does_not_move_a_cell():
    """Three seeds of the suite's LoRA; one 1-epoch LoRA record of another suite added to the
    same folder must leave the three-seed cell at their own mean and std."""
    accs = {0: 41.0, 1: 44.5, 2: 46.2}
    mine = [record(seed=s, acc=a) for s, a in accs.items()]
    before = cells(mine)[(1, "LoRA", "animals")]
    assert before[1] == 3 and math.isclose(before[0], statistics.mean(accs.values()))
    stray = record(seed=0, acc=20.0, epochs=1, suite="other")
    after = cells([*mine, stray])
    three = [v for k, v in after.items() if k[0] == 1 and k[2] == "animals" and v[1] == 3]
    assert three == [before]


def test_caption_seed_statement_is_true_for_every_cell():
    records = [record(acc=45.3, epochs=3), record(acc=98.4, epochs=40),
               record(acc=50.0, epochs=3, task="histology"),
               record(acc=51.0, epochs=3, seed=1), record(acc=52.0, epochs=3, task="histology",
                                                          seed=1)]
    for block in stats.build_blocks(records):
        for row in block.rows:
            for cell in row.cells.values():
                assert tuple(sorted(cell.by_seed)) == block.seed_set
                # every record of a cell has the same everything-but-the-seed
                assert len({json.dumps({**r["train"], "b": r["backbone"]}, sort_keys=True)
                            for r in cell.records}) == 1
