"""Packed runs (heartbench/pack.py): each run of a pack equals the same run trained alone.

The reference is ``train.train_phase`` itself, run once per spec in its own set-up: the
packed trainer shares no code path with it for the forward, the RNG streams or the steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from heartbench import pack
from heartbench import train as tr
from heartbench.suite import RunSpec, load_suite

REPO = Path(__file__).resolve().parent.parent

# Tolerance. fp32 unit roundoff u = 2**-24. A packed step computes every dot product of the
# unpacked step over the same n terms, but the GEMM kernel may block the K-times-taller
# matrix differently, so each result may differ by up to 2 * gamma_n ~ 2 * n * u relative to
# sum |x_i * y_i| (Higham, Accuracy and Stability, 3.1). The longest reduction here is the
# adapters' weight gradient over batch x tokens = 16 x 17 = 272 terms; a factor 10 covers
# its compounding through 2 blocks, the loss and 4 steps: TOL = 10 * 2 * 272 * u = 3.2e-4.
# AdamW's update lr * m / sqrt(v) is invariant to a relative gradient error to first order,
# so adapter tensors may differ by TOL relative plus steps * lr * TOL absolute.
# (On this machine's CPU the packed runs are in fact bitwise equal to the runs alone.)
TOL = 10 * 2 * 272 * 2.0**-24
STEPS, LR = 4, 5e-3

SUITE = """
[suite]
name = "{name}"
benchmark = "synth"
data_root = "{data}"
seeds = [0, 1, 2]
tasks = ["colors"]

[backbone]
name = "{backbone}"
{weights}

[train]
epochs = {epochs}
warmup_epochs = 1
batch_size = 16
lr = {lr}
max_train_batches = {batches}

[launcher]
executor = "local"
jobs = 1
pack = 3

[[methods]]
name = "{method}"
config = {{ {config} }}
{extra}
"""

# Every method, in a small configuration for the 2-block test ViT.
CONFIGS = {
    "lora": "rank = 4", "bilora": "rank = 8", "heart_lora": "rank = 8, ne = 5",
    "fourierft": "n_frequency = 100", "mora": "rank = 4", "full": "", "linear": "",
    "bitfit": "", "vpt_shallow": "length = 3", "vpt_deep": "length = 3", "adapter": "",
    "adaptformer": "", "ssf": "", "fact_tt": "", "compacter": "",
}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tasks=["colors"])
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pretrained-like frozen weights: the same for every seed, so runs can share them."""
    from safetensors.torch import save_file

    from heartbench.backbones import build_backbone

    out = {}
    for name in ("vit_test", "swin_test"):
        torch.manual_seed(123)
        model = build_backbone(name, 4).model
        path = tmp_path_factory.mktemp("weights") / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        out[name] = path
    return out


def specs_for(tmp_path: Path, data: Path, method: str, config: str = "", *,
              backbone: str = "vit_test", weights: Path | None = None, epochs: int = STEPS,
              batches: int = 1, extra: str = "", name: str = "p", lr: float = LR
              ) -> tuple[Path, list[RunSpec]]:
    path = tmp_path / f"{name}.toml"
    path.write_text(SUITE.format(
        name=name, data=data, backbone=backbone, method=method, config=config, extra=extra,
        weights=f'weights = "{weights}"' if weights else "", epochs=epochs, batches=batches,
        lr=lr))
    return path, load_suite(path).runs


def close(a: torch.Tensor | float, b: torch.Tensor | float, atol: float = 0.0) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return bool(torch.allclose(a, b, rtol=TOL, atol=atol))


def assert_same_run(alone: dict[str, Any], run: pack.Run) -> None:
    packed = run.outcome
    # max_train_batches = 1: one step per epoch, so each epoch's loss is one step's loss.
    for want, got in zip(alone["history"], packed["history"], strict=True):
        assert close(want["loss"], got["loss"]), (want, got)
        assert want["lr"] == got["lr"]
    mine = tr.trainable_state(alone["backbone"], alone["method"])
    theirs = tr.trainable_state(run.backbone, run.method)
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert close(mine[key], theirs[key], atol=STEPS * LR * TOL), key
    assert alone["acc"] == packed["acc"]


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_packed_steps_equal_each_run_alone(tmp_path: Path, synth_root: Path,
                                           weights: dict[str, Path], method: str) -> None:
    _, specs = specs_for(tmp_path, synth_root, method, CONFIGS[method],
                         weights=weights["vit_test"])
    alone = [tr.train_phase(s, s.method_config, "train", "test", None) for s in specs]
    runs = pack.train_pack(specs, [None] * len(specs))
    for result, run in zip(alone, runs):
        assert_same_run(result, run)
    # The runs really differ (different seeds), so equality above is not trivial.
    first, second = (r.outcome["history"][0]["loss"] for r in runs[:2])
    assert first != second


def test_heart_lora_scores_and_masks_are_each_runs_own(tmp_path: Path, synth_root: Path,
                                                       weights: dict[str, Path]) -> None:
    # Swin: per-stage head counts; ratio masks a quarter of each stage's heads.
    _, specs = specs_for(tmp_path, synth_root, "heart_lora", "rank = 8, ratio = 0.25",
                         backbone="swin_test", weights=weights["swin_test"], batches=2)
    alone = [tr.train_phase(s, s.method_config, "train", "test", None) for s in specs]
    runs = pack.train_pack(specs, [None] * len(specs))
    for result, run in zip(alone, runs):
        want, got = result["method"].record_extras()["heart"], run.method.record_extras()["heart"]
        assert want["mask"] == got["mask"]
        for kind in want["scores"]:
            for mine, theirs in zip(want["scores"][kind], got["scores"][kind], strict=True):
                assert close(torch.tensor(mine), torch.tensor(theirs), atol=1e-9), kind
    # Each run scored its own gradients: the seeds' scores differ.
    first, second = (r.method.record_extras()["heart"]["scores"]["taylor"] for r in runs[:2])
    assert first != second


def test_grid_values_and_learning_rates_pack_per_run(tmp_path: Path, synth_root: Path,
                                                     weights: dict[str, Path]) -> None:
    """Different scales and ranks (grid) and learning rates (per method entry) in one pack."""
    extra = """
[[methods]]
name = "lora"
label = "LoRA-fast"
config = { rank = 2 }
grid = { scale = [0.5, 2.0] }
seeds = [5]
train = { lr = 2e-2, weight_decay = 0.05 }
"""
    _, specs = specs_for(tmp_path, synth_root, "lora", "rank = 4", extra=extra,
                         weights=weights["vit_test"])
    assert len(pack.group_packs(specs, 8)) == 1  # five runs, one pack
    alone = [tr.train_phase(s, s.method_config, "train", "test", None) for s in specs]
    runs = pack.train_pack(specs, [None] * len(specs))
    for result, run in zip(alone, runs):
        assert_same_run(result, run)
    # One frozen backbone in memory: every frozen tensor of every run is the first run's.
    first = dict(runs[0].backbone.model.named_parameters())
    for run in runs[1:]:
        for name, param in run.backbone.model.named_parameters():
            assert param.requires_grad or param is first[name], name


def test_runs_that_cannot_share_a_backbone_run_alone(tmp_path: Path, synth_root: Path) -> None:
    # No weights file: each seed initialises its own frozen backbone, so nothing is shared.
    _, specs = specs_for(tmp_path, synth_root, "lora", "rank = 4")
    with pytest.raises(pack.NotPackable, match="differs between runs"):
        pack.train_pack(specs, [None] * len(specs))
    results = tmp_path / "results"
    records = pack.execute_pack(specs, results)
    for spec, record in zip(specs, records):
        assert "packed" not in record and record["status"] == "done"
        alone = tr.train_phase(spec, spec.method_config, "train", "test", None)
        assert record["metrics"]["test_acc"] == round(alone["acc"], 4)


def test_grouping_packs_compatible_runs_only(tmp_path: Path, synth_root: Path,
                                            weights: dict[str, Path]) -> None:
    extra = """
[[methods]]
name = "lora"
label = "LoRA-long"
train = { epochs = 5 }
[[methods]]
name = "bilora"
"""
    _, specs = specs_for(tmp_path, synth_root, "lora", "rank = 4", extra=extra,
                         weights=weights["vit_test"])
    packs = pack.group_packs(specs, 2)
    # Brute force: every pack is compatible, no run is lost or repeated, sizes <= 2, and no
    # two packs of the same key could have been merged (only the last of a key is short).
    assert sorted(s.run_id for p in packs for s in p) == sorted(s.run_id for s in specs)
    for p in packs:
        assert 1 <= len(p) <= 2 and len({pack.pack_key(s) for s in p}) == 1
    keys = [pack.pack_key(p[0]) for p in packs]
    assert sorted(len(p) for p in packs) == [1, 1, 1, 2, 2, 2]
    assert len(set(keys)) == 3
    laid_out = [s for p in packs for s in p]
    assert pack.consecutive_packs(laid_out, 2) == packs
    assert all(len(p) == 1 for p in pack.group_packs(specs, 1))


def test_launcher_pack_must_be_positive(tmp_path: Path, synth_root: Path) -> None:
    from heartbench.errors import UserError

    path, _ = specs_for(tmp_path, synth_root, "lora")
    path.write_text(path.read_text().replace("pack = 3", "pack = 0"))
    with pytest.raises(UserError, match="launcher.pack must be > 0"):
        load_suite(path)


def test_a_pack_interrupted_between_its_runs_checkpoints_resumes_at_their_common_epoch(
        tmp_path: Path, synth_root: Path, weights: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, specs = specs_for(tmp_path, synth_root, "heart_lora", "rank = 8, ne = 5",
                         weights=weights["vit_test"], batches=2)
    ckpts = [tmp_path / f"{s.run_id}.final.ckpt" for s in specs]
    whole = pack.train_pack(specs, [None] * len(specs))
    save, calls = tr.save_checkpoint, []

    def crash_on_fifth(path: Path, state: dict[str, Any]) -> None:
        calls.append(path)
        if len(calls) == 5:  # epoch 1 written for run 0 only: a kill mid-way
            raise KeyboardInterrupt
        save(path, state)

    monkeypatch.setattr(tr, "save_checkpoint", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        pack.train_pack(specs, ckpts)
    monkeypatch.setattr(tr, "save_checkpoint", save)
    assert [torch.load(c, weights_only=False)["epoch"] for c in ckpts] == [1, 0, 0]
    resumed = pack.train_pack(specs, ckpts)  # run 0 falls back to its .prev (epoch 0)
    for a, b in zip(whole, resumed):
        assert a.outcome["history"] == b.outcome["history"]
        mine, theirs = (tr.trainable_state(r.backbone, r.method) for r in (a, b))
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
        assert a.method.record_extras() == b.method.record_extras()


def _run(suite: Path, results: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "heartbench", "run", str(suite),
                             "--results-dir", str(results)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _records(results: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in results.rglob("*.json")
            if not p.name.startswith(".") and ".submitit" not in p.parts}


@pytest.mark.slow  # a whole launch in subprocesses
def test_packed_worker_killed_after_a_checkpoint_resumes_to_the_same_result(
        tmp_path: Path, synth_root: Path, weights: dict[str, Path]) -> None:
    suite, specs = specs_for(tmp_path, synth_root, "heart_lora", "rank = 8, ne = 5",
                             weights=weights["vit_test"], epochs=6, batches=0, name="kill")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = _run(suite, whole)
    assert proc.wait(timeout=900) == 0, proc.stdout.read() if proc.stdout else ""
    proc = _run(suite, killed)
    deadline = time.time() + 600
    while len(list(killed.rglob("*.final.ckpt"))) < len(specs):  # the pack's first epoch
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its local worker, mid-run
    proc.wait(timeout=60)
    assert not [r for r in _records(killed).values() if r.get("status") == "done"]
    proc = _run(suite, killed)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out
    logs = "".join(p.read_text() for p in killed.rglob("*.err"))
    assert "resuming from" in logs
    want, got = _records(whole), _records(killed)
    assert set(want) == set(got) == {s.run_id for s in specs}
    for run_id, record in want.items():
        assert record["packed"]["k"] == 3 and run_id in record["packed"]["with"]
        # The same code and thread count on both sides: resume is bitwise exact.
        assert got[run_id]["metrics"]["history"] == record["metrics"]["history"]
        assert got[run_id]["heart"]["mask"] == record["heart"]["mask"]
        from safetensors.torch import load_file

        a = load_file(str(next(whole.rglob(f"{run_id}.safetensors"))))
        b = load_file(str(next(killed.rglob(f"{run_id}.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
