"""Each method's recipe as its reference code has it (docs/recipes.md), the schedule stepping
of the reference train loop, and the legacy values that keep the committed records' ids.

Expected values are written here from the reference sources (KMnP/vpt configs and
tune_vtab.py, NOAH's adapter_super.py, timm's CosineLRScheduler driven as PETL-ViT's loop
drives it), not read from the code under test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomllib
import torch
from timm.scheduler import CosineLRScheduler

from heartbench.adapters import create_method
from heartbench.backbones import build_backbone
from heartbench.suite import load_suite
from heartbench.train import make_optimizer

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
VPT_FINETUNE_LR = [0.001, 0.0001, 0.0005, 0.005]  # tune_vtab.get_lrwd_range("finetune")
VPT_PROMPT_LR = [5.0, 2.5, 1.0, 50.0, 25.0, 10.0, 0.5, 0.25, 0.1, 0.05]  # ("prompt")
VPT_LINEAR_LR = [50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05]  # ("linear")
VPT_WD = [0.01, 0.001, 0.0001, 0.0]


def attached(name: str, config: dict) -> tuple:
    backbone = build_backbone("vit_test", 5)
    method = create_method(name, config)
    method.attach(backbone)
    return backbone, method


def groups_by_param(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------
def test_full_default_is_vpt_adamw() -> None:
    """base-finetune.yaml: AdamW; optimizer.py: eps 1e-6, no decay on tensors named *bias*;
    tune_vtab.setup: lr = base lr / 256 * batch size."""
    backbone, method = attached("full", {"lr": 0.005, "weight_decay": 0.001})
    params = method.trainable_parameters() + backbone.head_parameters()
    optimizer = make_optimizer(method, params, {"batch_size": 64, "lr": 1e-3,
                                                 "weight_decay": 1e-4})
    assert type(optimizer) is torch.optim.AdamW
    groups = groups_by_param(optimizer)
    named = dict(backbone.model.named_parameters())
    assert set(groups) == {id(p) for p in params}
    for name, p in named.items():
        group = groups[id(p)]
        assert group["lr"] == pytest.approx(0.005 * 64 / 256)
        assert group["eps"] == 1e-6
        assert group["weight_decay"] == (0.0 if "bias" in name else 0.001), name


@pytest.mark.parametrize("name", ["linear", "vpt_shallow", "vpt_deep"])
def test_linear_and_prompts_default_to_vpt_sgd(name: str) -> None:
    """base-linear.yaml / base-prompt.yaml: SGD, momentum 0.9; optimizer.py: no decay on
    the classifier's bias; lr scaled by batch / 256."""
    backbone, method = attached(name, {"lr": 2.5, "weight_decay": 0.01})
    params = method.trainable_parameters() + backbone.head_parameters()
    optimizer = make_optimizer(method, params, {"batch_size": 32, "lr": 1e-3,
                                                 "weight_decay": 1e-4})
    assert type(optimizer) is torch.optim.SGD
    groups = groups_by_param(optimizer)
    assert set(groups) == {id(p) for p in params}
    for p in params:
        group = groups[id(p)]
        assert group["lr"] == pytest.approx(2.5 * 32 / 256) and group["momentum"] == 0.9
        assert group["weight_decay"] == (0.0 if p is backbone.head.bias else 0.01)
    legacy = create_method(name, {"optimizer": "adamw"})
    legacy.attach(build_backbone("vit_test", 5))
    assert type(make_optimizer(legacy, params, {"batch_size": 32, "lr": 1e-3,
                                                "weight_decay": 1e-4})) is torch.optim.AdamW


# ---------------------------------------------------------------------------
# NOAH's adapter (few-shot)
# ---------------------------------------------------------------------------
def test_noah_adapter_quick_gelu_bias_xavier() -> None:
    torch.manual_seed(0)
    backbone, method = attached("adapter", {"hidden": 8, "activation": "quick_gelu",
                                            "bias": True, "init": "xavier"})
    adapter = method.modules["layer0"]
    dim = backbone.sites[0].dim
    bound = math.sqrt(6.0 / (dim + 8))  # xavier-uniform for both (dim, 8) and (8, dim)
    for layer in (adapter.down, adapter.up):
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
        b = layer.bias.detach()
        assert (b != 0).any() and b.abs().max() < 1e-5  # N(0, 1e-6)
    x = torch.randn(2, 5, dim)
    h = x @ adapter.down.weight.T + adapter.down.bias
    expected = (h * torch.sigmoid(1.702 * h)) @ adapter.up.weight.T + adapter.up.bias
    torch.testing.assert_close(adapter(x), expected)
    # The few-shot suite's Adapter row is NOAH's.
    adapter_rows = [m for m in tomllib.loads((SUITES / "fewshot.toml").read_text())["methods"]
                    if m["name"] == "adapter"]
    assert adapter_rows and all(
        {"activation": "quick_gelu", "bias": True, "init": "xavier"}.items()
        <= m["config"].items() for m in adapter_rows)


# ---------------------------------------------------------------------------
# The schedule: timm's scheduler stepped as the reference loop steps it
# ---------------------------------------------------------------------------
def reference_lrs(epochs: int, warmup: int, lr: float, init: float, lr_min: float,
                  offset: int = 0) -> list[float]:
    """PETL-ViT / FacT / RepAdapter's loop: train epoch ep, then scheduler.step(ep)
    (``offset`` 1: step(ep + 1), heartbench's stepping before schedule_step)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = CosineLRScheduler(opt, t_initial=epochs, warmup_t=warmup, warmup_lr_init=init,
                                  lr_min=lr_min)
    lrs = []
    for ep in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])  # the lr the epoch trains at
        scheduler.step(ep + offset)
    return lrs


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tasks=["colors"])
    return root


def run_spec(tmp_path: Path, root: Path, train: str) -> object:
    text = (f'[suite]\nbenchmark = "synth"\ndata_root = "{root}"\ntasks = ["colors"]\n'
            '[backbone]\nname = "vit_test"\n'
            f'[train]\nepochs = 6\nwarmup_epochs = 3\nlr = 1e-2\nwarmup_lr_init = 1e-4\n'
            f'min_lr = 1e-5\nbatch_size = 16\nmax_train_batches = 1\ndevice = "cpu"\n{train}\n'
            '[[methods]]\nname = "lora"\nconfig = { rank = 2 }\n')
    path = tmp_path / f"s{abs(hash(train))}.toml"
    path.write_text(text)
    return load_suite(path).runs[0]


@pytest.mark.parametrize("train, shift", [("", 0), ('schedule_step = "reference"', 0),
                                          ('schedule_step = "next_epoch"', 1)])
def test_schedule_follows_the_reference_loop(tmp_path: Path, synth_root: Path, train: str,
                                             shift: int) -> None:
    from heartbench.train import train_phase

    spec = run_spec(tmp_path, synth_root, train)
    history = train_phase(spec, spec.method_config, "train", "test", None)["history"]
    ours = [row["lr"] for row in history]
    ref = reference_lrs(6, 3, 1e-2, 1e-4, 1e-5)
    if shift == 0:  # the default: epochs 0 and 1 both at warmup_lr_init
        assert ours == pytest.approx(ref, rel=1e-12)
        assert ours[0] == ours[1] == 1e-4
    else:  # the legacy stepping (committed records): one epoch ahead from epoch 1 on
        assert ours == pytest.approx(reference_lrs(6, 3, 1e-2, 1e-4, 1e-5, offset=1), rel=1e-12)
        assert ours[1:] == pytest.approx(ref[2:] + [ours[-1]], rel=1e-12) and ours[1] != ours[0]


# ---------------------------------------------------------------------------
# The suites carry each recipe, with its source named
# ---------------------------------------------------------------------------
def entries(suite: str, name: str) -> list[dict]:
    return [m for m in tomllib.loads((SUITES / suite).read_text())["methods"]
            if m["name"] == name]


@pytest.mark.parametrize("suite", ["vtab1k.toml", "swin_vtab1k.toml"])
def test_vpt_rows_follow_vpt(suite: str) -> None:
    text = (SUITES / suite).read_text()
    for source in ("base-finetune.yaml", "base-linear.yaml", "base-prompt.yaml", "tune_vtab.py"):
        assert source in text
    runs = load_suite(SUITES / suite).runs
    by = {}
    for run in runs:
        by.setdefault(run.method, run)
    full = by["full"]
    assert full.method_config["optimizer"] == "vpt_adamw" and full.train["warmup_epochs"] == 5
    assert sorted(full.search["lr"]) == sorted(VPT_FINETUNE_LR)
    assert sorted(full.search["weight_decay"]) == sorted(VPT_WD)
    for name in ("linear", "vpt_deep"):
        run = by[name]
        assert run.method_config["optimizer"] == "sgd" and run.train["warmup_epochs"] == 10
        want = VPT_LINEAR_LR if name == "linear" else VPT_PROMPT_LR
        assert sorted(run.search["lr"]) == sorted(want)
        assert sorted(run.search["weight_decay"]) == sorted(VPT_WD)
    assert {1, 5} <= set(by["vpt_deep"].search["length"])
    # VPT's protocol: chosen on val200 after train800 (tune_vtab.py main).
    assert all(by[m].eval_protocol == "val" for m in ("full", "linear", "vpt_deep"))
    assert all(r.train["schedule_step"] == "reference" for r in runs)


# ---------------------------------------------------------------------------
# Committed records keep their run ids and reproduce with their old recipe
# ---------------------------------------------------------------------------
def test_committed_records_keep_their_run_ids_under_the_new_keys() -> None:
    """Every committed record, completed with the legacy values of the keys added since it was
    stored (schedule_step, optimizer, pre_logits, ...), hashes to its stored run_id: the new
    defaults change no old run's identity. (The twin suites themselves moved on to the per-step
    warm-up of issue 25, so their plans are new runs; `check`'s run-ids section does the same
    recomputation for every record.)"""
    from heartbench.rerun import spec_from_record
    from heartbench.suite import run_id_of

    paths = sorted((ROOT / "results").glob("*/*.json"))
    assert paths, "no committed records"
    wrong = []
    for path in paths:
        record = json.loads(path.read_text())
        spec = spec_from_record(record)
        if record.get("searched_from"):  # a val search stores its chosen config
            continue  # covered by check's run-ids section (searched_from, legacy ne)
        if spec.search:
            continue
        if run_id_of(spec.identity()) != record["run_id"]:
            wrong.append(path.name)
    assert not wrong, f"{len(wrong)} committed record(s) hash to another run id: {wrong[:5]}"


def test_old_records_complete_to_their_recipe() -> None:
    from heartbench.rerun import spec_from_record

    record = {"suite": "s", "benchmark": "vtab_mini", "data_root": "d", "task": "t",
              "group": None, "num_classes": 3, "shots": None, "method": "vpt_deep",
              "label": "VPT", "method_config": {"length": 10, "dropout": 0.0,
                                                "encoder_eval": True},
              "grid": {}, "search": {}, "backbone": {}, "train": {"lr": 1e-3}, "seed": 0,
              "eval_protocol": "last", "run_id": "r"}
    spec = spec_from_record(record)
    assert spec.method_config["optimizer"] == "adamw"
    assert spec.train["schedule_step"] == "next_epoch"
    adapter = spec_from_record({**record, "method": "adapter",
                                "method_config": {"hidden": 8}})
    assert adapter.method_config["init"] == "zero_up"


@pytest.mark.parametrize("extra, expected", [
    ('[train]\nschedule_step = "epoch"\n', "train.schedule_step must be one of reference,"
                                           " next_epoch, got 'epoch'"),
    ('[[methods]]\nname = "lora"\neval_protocol = "vall"\n',
     "methods[1].eval_protocol: unknown protocol 'vall' (did you mean 'val'?)"),
    ('[[methods]]\nname = "linear"\nconfig = { optimizer = "adam" }\n',
     "optimizer must be one of sgd, vpt_adamw, adamw, got 'adam'"),
])
def test_recipe_key_mistakes_are_one_line(tmp_path: Path, extra: str, expected: str) -> None:
    from heartbench.errors import UserError

    path = tmp_path / "bad.toml"
    path.write_text('[suite]\nbenchmark = "synth"\ndata_root = "d"\ntasks = ["colors"]\n'
                    '[backbone]\nname = "vit_test"\n[[methods]]\nname = "lora"\n' + extra)
    with pytest.raises(UserError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_pre_logits_on_swin_is_one_line(tmp_path: Path) -> None:
    from heartbench.errors import UserError

    path = tmp_path / "swin.toml"
    path.write_text('[suite]\nbenchmark = "synth"\ndata_root = "d"\ntasks = ["colors"]\n'
                    '[backbone]\nname = "swin_test"\npre_logits = true\n'
                    '[[methods]]\nname = "lora"\n')
    with pytest.raises(UserError, match="only a ViT has a representation layer") as info:
        load_suite(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
