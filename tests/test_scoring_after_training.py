"""Heart-LoRA scores heads on adapters that have trained (issue 25, point 1).

The schedule is recomputed here by hand (timm's cosine with linear warm-up, written out), not
through heartbench.schedule, and compared with what the trainer ran and stored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from heartbench.cli import main as cli
from heartbench.errors import UserError
from heartbench.results import load_records

REPO = Path(__file__).resolve().parent.parent
TWIN_SUITES = ("vtab_mini", "score_window_mini", "fewshot_mini", "swin_mini", "vtab_mini_quick",
               "vtab_mini_fair", "fewshot_mini_fair")

SUITE = """
[suite]
name = "warm"
benchmark = "synth"
data_root = "{data}"
seeds = [0]
tasks = ["colors"]

[backbone]
name = "vit_test"

[train]
epochs = 3
warmup_epochs = {warmup}
batch_size = 16
lr = 5e-3
warmup_per_step = {per_step}

[launcher]
jobs = 1

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = {{ rank = 8, ne = 1, score_window = "{window}" }}
"""


def lr_by_hand(t: float, total: float, warmup: float, lr: float, init: float, lr_min: float
               ) -> float:
    """timm CosineLRScheduler (no warm-up prefix, one cycle) at time ``t``."""
    if t < warmup:
        return init + t * (lr - init) / warmup
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t / total))


def step_lrs_by_hand(epochs: int, warmup: int, steps: int, per_step: bool, lr: float = 5e-3,
                     init: float = 1e-6, lr_min: float = 1e-5) -> list[float]:
    """Every optimiser step's lr: per step at t = g + 1 (in steps); per epoch as the reference
    loops step it (train.schedule_step's default "reference": ``scheduler.step(ep)`` after
    epoch ep, so epoch e >= 1 trains at t = e - 1 and epochs 0 and 1 both at t = 0)."""
    out = []
    for g in range(epochs * steps):
        if per_step:
            out.append(lr_by_hand(g + 1, epochs * steps, warmup * steps, lr, init, lr_min))
        else:
            out.append(lr_by_hand(max(g // steps - 1, 0), epochs, warmup, lr, init, lr_min))
    return out


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tasks=["colors"])
    return root


def _train(tmp_path: Path, data: Path, warmup: int, per_step: bool, window: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    suite = tmp_path / "warm.toml"
    suite.write_text(SUITE.format(data=data, warmup=warmup, per_step=str(per_step).lower(),
                                  window=window))
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--executor", "debug", "--results-dir", str(results)]) == 0
    (record,) = load_records(results).records
    return record


def _train_steps(data: Path, batch: int) -> int:
    images = len((data / "colors" / "train800val200.txt").read_text().splitlines())
    return images // batch


@pytest.mark.parametrize("warmup, per_step, window", [
    (1, True, "last_step"), (2, True, "epoch"), (2, False, "last_step")])
def test_record_stores_the_steps_and_mean_lr_before_scoring(
        tmp_path: Path, synth_root: Path, warmup: int, per_step: bool, window: str) -> None:
    """The stored count and mean lr equal a by-hand recomputation of the schedule: the last
    read is the last warm-up step's gradient, after every earlier step was applied."""
    record = _train(tmp_path, synth_root, warmup, per_step, window)
    steps = _train_steps(synth_root, 16)
    lrs = step_lrs_by_hand(3, warmup, steps, per_step)
    before = warmup * steps - 1
    heart = record["heart"]
    assert heart["steps_before_scoring"] == before
    assert heart["mean_lr_before_scoring"] == pytest.approx(sum(lrs[:before]) / before, rel=1e-9)
    # The history's lr per epoch is the lr its last step trained at.
    assert [row["lr"] for row in record["metrics"]["history"]] == pytest.approx(
        [lrs[(e + 1) * steps - 1] for e in range(3)], rel=1e-9)


def test_per_step_warm_up_trains_before_scoring_where_per_epoch_does_not(
        tmp_path: Path, synth_root: Path) -> None:
    """One warm-up epoch: per epoch every step before the scores is at warmup_lr_init; per
    step their mean is at least a quarter of the base lr."""
    old = _train(tmp_path / "old", synth_root, 1, False, "last_step")["heart"]
    new = _train(tmp_path / "new", synth_root, 1, True, "last_step")["heart"]
    assert old["mean_lr_before_scoring"] == pytest.approx(1e-6)
    assert new["steps_before_scoring"] >= 1
    assert new["mean_lr_before_scoring"] >= 0.25 * 5e-3


def test_planned_lrs_are_the_schedule_by_hand() -> None:
    from heartbench.schedule import planned_lrs
    from heartbench.suite import TRAIN_DEFAULTS

    for per_step, steps, warmup in ((True, 15, 1), (True, 1, 2), (False, 15, 10), (False, 3, 1)):
        train = {**TRAIN_DEFAULTS, "epochs": 12, "warmup_epochs": warmup, "lr": 5e-3,
                 "warmup_per_step": per_step}
        want = step_lrs_by_hand(12, warmup, steps, per_step)
        assert planned_lrs(train, steps, len(want)) == pytest.approx(want, rel=1e-12)


def _twin_text(name: str, per_step: bool) -> str:
    text = (REPO / "suites" / f"{name}.toml").read_text()
    assert "warmup_per_step = true" in text, f"{name}: the twin suite steps its warm-up per step"
    return text if per_step else text.replace("warmup_per_step = true", "warmup_per_step = false")


@pytest.mark.parametrize("name", TWIN_SUITES)
def test_twin_suites_score_trained_adapters(tmp_path: Path, name: str) -> None:
    """Every Heart-LoRA run of every twin suite plans its scores after at least one step at a
    mean lr >= 0.25 x lr (by hand); the same suite stepped per epoch is refused at planning."""
    from heartbench.schedule import planned_steps
    from heartbench.suite import load_suite

    suite = load_suite(REPO / "suites" / f"{name}.toml")
    hearts = [r for r in suite.runs if r.method == "heart_lora"]
    assert hearts
    for run in hearts:
        c, t = run.method_config, run.train
        if c["score"] in ("front", "random") or (c["ne"] == 0 and not c["ratio"]):
            continue
        for split in ("train", "search_train") if run.search else ("train",):
            steps = planned_steps(run, split)
            before = t["warmup_epochs"] * steps - 1
            lrs = step_lrs_by_hand(t["epochs"], t["warmup_epochs"], steps, True, t["lr"],
                                   t["warmup_lr_init"], t["min_lr"])[:before]
            assert before >= 1 and sum(lrs) / before >= 0.25 * t["lr"], (run.task, run.shots)
    legacy = tmp_path / f"{name}.toml"
    legacy.write_text(_twin_text(name, per_step=False))
    with pytest.raises(UserError, match="would not have trained"):
        load_suite(legacy)


def test_legacy_schedule_keeps_run_ids() -> None:
    """warmup_per_step = false (the legacy value) is left out of the identity; true is not."""
    from heartbench.rerun import spec_from_record
    from heartbench.suite import RunSpec, run_id_of

    # A record from before the per-step warm-up (the old twin, archived since its re-run).
    legacy_records = (json.loads(p.read_text())
                      for p in sorted((REPO / "results").glob("**/vtab_mini/*.json")))
    record = next((r for r in legacy_records if "warmup_per_step" not in (r.get("train") or {})),
                  None)
    if record is None:
        pytest.skip("no committed record from before warmup_per_step")
    spec = spec_from_record(record)
    assert run_id_of(spec.identity()) == record["run_id"]
    legacy = RunSpec(**{**spec.to_dict(), "train": {**spec.train, "warmup_per_step": False}})
    assert run_id_of(legacy.identity()) == record["run_id"]
    new = RunSpec(**{**spec.to_dict(), "train": {**spec.train, "warmup_per_step": True}})
    assert run_id_of(new.identity()) != record["run_id"]


def test_packed_runs_step_the_per_step_schedule_as_alone(tmp_path: Path, synth_root: Path
                                                         ) -> None:
    """A pack (heartbench/pack.py) steps each run's per-step schedule as the run alone does:
    same lr per epoch, same steps and mean lr before scoring, same mask."""
    import torch
    from safetensors.torch import save_file

    from heartbench import pack
    from heartbench import train as tr
    from heartbench.backbones import build_backbone
    from heartbench.suite import load_suite

    torch.manual_seed(123)  # frozen weights the runs share, as pretrained ones
    weights = tmp_path / "vit_test.safetensors"
    save_file({k: v.contiguous() for k, v in build_backbone("vit_test", 4).model.state_dict()
               .items()}, str(weights))
    path = tmp_path / "pack.toml"
    path.write_text(SUITE.format(data=synth_root, warmup=1, per_step="true", window="last_step")
                    .replace("seeds = [0]", "seeds = [0, 1]")
                    .replace('name = "vit_test"', f'name = "vit_test"\nweights = "{weights}"')
                    .replace("jobs = 1", "jobs = 1\npack = 2"))
    specs = load_suite(path).runs
    alone = [tr.train_phase(s, s.method_config, "train", "test", None) for s in specs]
    runs = pack.train_pack(specs, [None] * len(specs))
    steps = _train_steps(synth_root, 16)
    lrs = step_lrs_by_hand(3, 1, steps, True)
    for result, run in zip(alone, runs):
        want = result["method"].record_extras()["heart"]
        got = run.method.record_extras()["heart"]
        assert got["steps_before_scoring"] == want["steps_before_scoring"] == steps - 1
        assert got["mean_lr_before_scoring"] == pytest.approx(
            sum(lrs[:steps - 1]) / (steps - 1), rel=1e-9)
        assert got["mean_lr_before_scoring"] == want["mean_lr_before_scoring"]
        assert [r["lr"] for r in run.outcome["history"]] == [r["lr"] for r in result["history"]]
        assert got["mask"] == want["mask"]
