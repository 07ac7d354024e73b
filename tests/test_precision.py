"""Precision: how much of each method's update survives bf16 autocast, and the recorded choice.

bf16 keeps 8 significant bits, so the features of a layer are rounded to about 2^-9 of
their own size. An update whose effect on the features is small next to them is partly
lost: the measurement below (CPU autocast, ViT-B width, each method at the smallest scale
a shipped suite uses, its tensors moved by 0.02 from their initial values) gives, per
method, the fraction of the update's effect on the pre-logits features that bf16 keeps.
The precision table of docs/protocols.md is this module's output (``python tests/test_precision.py``);
``test_readme_table_is_what_this_module_measures`` fails when a row no longer matches.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest
import torch

from heartbench.adapters import create_method
from heartbench.adapters.base import METHODS, get_method_class
from heartbench.adapters.fourierft import FourierDelta
from heartbench.backbones import build_backbone

# The smallest scale of each method in any shipped suite (suites/*.toml).
SMALLEST: dict[str, dict] = {
    "lora": {"rank": 8, "scale": 0.01},                       # vtab1k grid
    "bilora": {"rank": 32, "bits": 1, "scale": 0.01},         # vtab1k per_task dtd
    "heart_lora": {"rank": 32, "bits": 1, "scale": 0.01, "ne": 1},  # vtab1k grid
    "fourierft": {"n_frequency": 12288, "scaling": 1.0},      # vtab1k grid
    "mora": {"rank": 8, "variant": "rope"},                   # no scale; the suites' default
    "adapter": {"hidden": 8},                                 # no suite sets its scale (1)
    "adaptformer": {"hidden": 8, "scale": 0.01},              # vtab1k grid
    "compacter": {"hidden": 32, "phm_dim": 4},                # no scale; the defaults
    "fact_tt": {"rank": 8, "scale": 0.01},                    # vtab1k per_task dtd
    "ssf": {},
    "vpt_shallow": {"length": 10},
    "vpt_deep": {"length": 10},
    "bitfit": {},
    "full": {},
}
STEP = 0.02  # how far each trainable tensor moves from its initial value
# Methods measured; 'linear' trains only the head, so it changes no feature.
MEASURED = sorted(set(METHODS) - {"linear"}) if METHODS else sorted(SMALLEST)


def _features(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model.forward_head(model.forward_features(x), pre_logits=True)
    return out.float()


@functools.cache
def measure(name: str, seed: int = 0) -> dict[str, float]:
    """Features' change from the update in fp32 and under bf16 autocast, on ViT-B width."""
    torch.manual_seed(seed)
    backbone = build_backbone("vit_base_patch16_224", 10, img_size=32, depth=2,
                              drop_path_rate=0.0)
    model = backbone.model.eval()
    x = torch.randn(8, 3, 32, 32)
    base32, base16 = _features(model, x, False), _features(model, x, True)
    method = create_method(name, SMALLEST.get(name, {}))
    method.attach(backbone)
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(STEP * torch.randn(p.shape, generator=gen))
    delta32 = _features(model, x, False) - base32
    delta16 = _features(model, x, True) - base16
    lost = float((delta16 - delta32).norm() / delta32.norm())
    return {"relative_update": float(delta32.norm() / base32.norm()),
            "base_error": float((base16 - base32).norm() / base32.norm()),
            "kept": max(0.0, 1.0 - lost), "lost": lost}


SCALE_KEYS = ("scale", "scaling")


def _shipped_values(key: str) -> dict[str, set]:
    """Every value of ``key`` any shipped suite gives a method: config, grid and per_task,
    and the method's default where an entry sets it in neither config nor grid."""
    import tomllib

    found: dict[str, set] = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.toml")):
        for entry in tomllib.loads(path.read_text(encoding="utf-8")).get("methods", []):
            values = found.setdefault(entry["name"], set())
            config, grid = entry.get("config", {}), entry.get("grid", {})
            if key in config:
                values.add(config[key])
            values.update(grid.get(key, []))
            values.update(task[key] for task in entry.get("per_task", {}).values()
                          if key in task)
            if key not in config and key not in grid:
                default = getattr(get_method_class(entry["name"]).config_cls(), key, None)
                if default is not None:
                    values.add(default)
    return found


def test_each_method_is_measured_at_the_smallest_shipped_scale() -> None:
    """SMALLEST follows suites/*.toml: the smallest scale any suite gives a method (its
    default where no suite sets one), and every other measured key at a value a suite uses
    or, where none sets it, at the method's default (MoRA's variant)."""
    for name in MEASURED:
        config = SMALLEST.get(name, {})
        defaults = get_method_class(name).config_cls()
        for key in SCALE_KEYS:
            if not hasattr(defaults, key):
                assert key not in config, (name, key)
                continue
            shipped = _shipped_values(key).get(name) or {getattr(defaults, key)}
            assert config.get(key, getattr(defaults, key)) == min(shipped), (name, key, shipped)
        for key, value in config.items():
            if key not in SCALE_KEYS:
                shipped = _shipped_values(key).get(name) or {getattr(defaults, key)}
                assert value in shipped, (name, key, value, shipped)


@pytest.mark.parametrize("name", MEASURED)
def test_bf16_loss_follows_the_rounding_of_the_features(name: str) -> None:
    """bf16 loses what is below the rounding of the features: the loss predicted from the
    size of the update next to the bf16 error of the frozen features (measured separately,
    without any update) bounds the measured loss, and is at most 4x above it."""
    m = measure(name)
    # If the rounding errors of the two passes (with and without the update) were
    # independent they would add up to sqrt(2) x the frozen features' error. They are
    # partly shared (both passes round the same frozen computation), so the measured loss
    # is lower: 0.3-1.0x the prediction over all methods.
    predicted = math.sqrt(2) * m["base_error"] / m["relative_update"]
    assert predicted / 4 < m["lost"] < 1.25 * predicted, (m, predicted)


def test_small_updates_lose_much_under_bf16_large_ones_little() -> None:
    """The README's finding: at the suites' smallest scales the updates of the LoRA family,
    FourierFT, AdaptFormer, Compacter and FacT are below the rounding of the features and
    bf16 loses more than half of their effect; MoRA, VPT, SSF, BitFit and full fine-tuning,
    whose updates are large, keep more than 95 %."""
    for name in ("lora", "bilora", "heart_lora", "fourierft", "adaptformer", "compacter",
                 "fact_tt"):
        assert measure(name)["lost"] > 0.5, name
    for name in ("mora", "full", "vpt_shallow", "vpt_deep", "ssf", "bitfit"):
        assert measure(name)["lost"] < 0.05, name


def _fold_vs_separate(std: float) -> tuple[float, float, float]:
    """Errors (vs fp64) of FourierFT's qkv output change under bf16: heartbench's layer, a
    separate low-precision matmul for dW (reference), and the old fold of dW into W."""
    torch.manual_seed(0)
    d = 768
    base = torch.nn.Linear(d, 3 * d)
    torch.nn.init.trunc_normal_(base.weight, std=0.02)
    delta = FourierDelta(d, d, n_frequency=12288, scaling=1.0, seed=777)
    with torch.no_grad():
        delta.spectrum.mul_(std / delta.delta_weight().std())
    from heartbench.adapters.base import AdaptedLinear

    layer = AdaptedLinear(base)
    layer.add("q", delta, 0, d)
    x = torch.randn(64, d)
    with torch.no_grad():
        dw = delta.delta_weight().double()
        exact = x.double() @ dw.t()  # the change of the q outputs, in fp64
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = (layer(x) - base(x)).float()[:, :d].double()
        xb, wb = x.bfloat16(), base.weight[:d].bfloat16()
        separate = (xb @ wb.t() + xb @ dw.bfloat16().t()).double() - (xb @ wb.t()).double()
        folded = (xb @ (base.weight[:d] + dw.float()).bfloat16().t()).double() \
            - (xb @ wb.t()).double()
    err = [float((v - exact).norm() / exact.norm()) for v in (ours, separate, folded)]
    return err[0], err[1], err[2]


@pytest.mark.parametrize("std", [4e-3, 4e-4])
def test_fourierft_loses_no_more_under_bf16_than_a_separate_matmul(std: float) -> None:
    ours, separate, folded = _fold_vs_separate(std)
    assert ours <= 1.1 * separate + 1e-3, (ours, separate)
    # The fold would have lost more: this test can tell the two apart.
    assert folded > 1.5 * separate, (folded, separate)


def test_fourierft_folds_in_fp32_and_matches_the_separate_form() -> None:
    """Outside autocast the fold stays (one matmul) and equals x W^T + x dW^T."""
    torch.manual_seed(0)
    delta = FourierDelta(16, 16, n_frequency=40, scaling=3.0, seed=1)
    assert delta.on_weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not delta.on_weight


def test_precision_is_a_checked_suite_key_stored_in_records(tmp_path) -> None:
    from heartbench.errors import UserError
    from heartbench.suite import load_suite

    text = ('[suite]\nbenchmark = "synth"\ndata_root = "d"\n[backbone]\nname = "vit_test"\n'
            '[train]\nepochs = 2\nwarmup_epochs = 1\n{extra}\n[[methods]]\nname = "lora"\n')
    path = tmp_path / "s.toml"
    path.write_text(text.format(extra=""))
    default = load_suite(path).runs[0]
    assert default.train["precision"] == "fp32"
    # fp32 (the default) is left out of the identity: runs from before the key keep their ids.
    assert "precision" not in default.identity()["train"]
    path.write_text(text.format(extra='precision = "bf16"'))
    bf16 = load_suite(path).runs[0]
    assert bf16.train["precision"] == "bf16" and bf16.run_id != default.run_id
    path.write_text(text.format(extra='precision = "fp16"'))
    with pytest.raises(UserError, match="train.precision must be one of fp32, tf32, bf16"):
        load_suite(path)


def test_autocast_is_off_unless_bf16_is_asked_for() -> None:
    from heartbench.train import autocast

    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32),
                             ("bf16", torch.bfloat16)):
        with autocast(torch.device("cpu"), precision):
            assert lin(x).dtype == dtype, precision


# The precision table lives on the docs page about precision (it was in README.md).
PAGE = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"
TABLE_HEADER = "| method | smallest shipped scale | update / features (fp32) | bf16 keeps |"


def describe(config: dict) -> str:
    """The docs table's 'smallest shipped scale' cell of a method's measured config."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in config.items()) or "-"


def table_row(name: str) -> str:
    m = measure(name)
    return (f"| {name} | {describe(SMALLEST.get(name, {}))} | {m['relative_update']:.1e} |"
            f" {100 * m['kept']:.0f} % |")


def _readme_rows() -> dict[str, list[str]]:
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its |---| line
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_readme_table_is_what_this_module_measures() -> None:
    """Every row of the docs' precision table (docs/protocols.md): the config this module measures, and the
    measured update size (within 5 %) and kept fraction (within 1 point)."""
    rows = _readme_rows()
    assert sorted(rows) == sorted(MEASURED), sorted(rows)
    for name in MEASURED:
        _, scale, update, kept = rows[name]
        m = measure(name)
        assert scale == describe(SMALLEST.get(name, {})), (name, scale)
        assert abs(float(update) / m["relative_update"] - 1) < 0.05, (name, update, m)
        percent = re.fullmatch(r"(\d+) %", kept)
        assert percent, (name, kept)
        assert abs(int(percent.group(1)) - 100 * m["kept"]) <= 1.0, (name, kept, m)


if __name__ == "__main__":  # the table of docs/protocols.md
    get_method_class("lora")
    print(TABLE_HEADER)
    print("|---|---|---|---|")
    for name in sorted(MEASURED, key=lambda n: (measure(n)["kept"], measure(n)["relative_update"])):
        print(table_row(name))
    for std in (4e-3, 4e-4):
        print("fourierft dW std", std, "errors (ours, separate, fold):", _fold_vs_separate(std))
