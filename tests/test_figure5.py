"""Figure 5: attention maps recomputed from stored adapters (torch; tiny ViT, no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from heartbench import figure5  # noqa: E402
from heartbench.adapters import create_method, save_adapter  # noqa: E402
from heartbench.backbones import build_backbone  # noqa: E402
from heartbench.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("vit_mini", 4)


def test_cls_attention_is_the_module_attention():
    """Recomputed weights times v, projected, give the attention module's own output."""
    backbone = tiny()
    method = create_method("bilora", {"rank": 4})
    method.attach(backbone)
    for module in method.modules.values():  # non-zero updates: the adapter must matter
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.05)
    backbone.model.eval()
    site = backbone.sites[-1]
    seen = {}
    hook = site.attn.register_forward_hook(
        lambda m, args, out: seen.update(x=args[0], out=out))
    images = torch.randn(2, 3, backbone.input_size, backbone.input_size)
    with torch.no_grad():
        backbone.model(images)
        hook.remove()
        attn, x = site.attn, seen["x"]
        b, n, _ = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
        weights = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)
        out = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, -1))
        torch.testing.assert_close(out, seen["out"], rtol=1e-4, atol=1e-5)
        cls = figure5.cls_attention(attn, x, prefix=1)
    torch.testing.assert_close(cls, weights[:, :, 0, 1:])
    torch.testing.assert_close(cls.sum(-1) + weights[:, :, 0, 0], torch.ones(2, attn.num_heads))
    maps = figure5.attention_maps(backbone, images, [site.layer])[site.layer]
    side = int((n - 1) ** 0.5)
    assert maps.shape == (2, attn.num_heads, side, side)


def _record(tmp_path: Path, method: str, config: dict, run_id: str, mask=None) -> Path:
    backbone = tiny()
    m = create_method(method, config)
    m.attach(backbone)
    if mask is not None:
        m.apply_mask(mask)
    folder = tmp_path / "res" / "suite"
    folder.mkdir(parents=True, exist_ok=True)
    save_adapter(m, folder / f"{run_id}.safetensors")
    record = {
        "schema": 1, "status": "done", "run_id": run_id, "suite": "suite", "benchmark": "vtab_mini",
        "task": "histology", "label": {"bilora": "Bi-LoRA"}.get(method, "Heart-LoRA"),
        "method": method, "method_config": config, "grid": {}, "seed": 0, "shots": None,
        "num_classes": 4, "backbone": {"name": "vit_mini", "weights": None, "kwargs": {}},
        "adapter": {"file": f"{run_id}.safetensors"}, "metrics": {"test_acc": 50.0},
        "heart": {"mask": mask} if mask else None, "data_root": str(tmp_path / "data"),
    }
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps(record))
    return path


def test_figure5_marks_the_masked_heads(tmp_path, monkeypatch):
    heads = tiny().sites[0].num_heads
    layers = len(tiny().sites)
    mask = [[0, 1] + [1] * (heads - 2)] * layers
    heart = figure5.read_record(_record(tmp_path, "heart_lora", {"rank": 4, "ne": 1}, "h1", mask))
    bilora = figure5.read_record(_record(tmp_path, "bilora", {"rank": 4}, "b1"))
    monkeypatch.setattr(figure5, "test_images",
                        lambda record, size, count: torch.rand(count, 3, size, size))
    labels = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.set_xlabel
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel",
                        lambda self, text, *a, **k: (labels.append(text), original(self, text, *a, **k))[1])
    png = figure5.build(heart, bilora, tmp_path / "out", images=2)
    assert png.read_bytes()[:4] == b"\x89PNG"
    # One "masked" label per Heart-LoRA row (2 images x 1 layer), on head 0 only.
    assert labels.count("masked") == 2
    tex = (tmp_path / "out" / "fig5_vtab_mini.tex").read_text()
    assert "\\renewcommand{\\thefigure}{T5}" in tex and "heads 0 in the last layer" in tex
    assert "figure*" in tex


def test_figure5_refuses_a_pair_of_different_tasks(tmp_path):
    heart = figure5.read_record(_record(tmp_path, "heart_lora", {"rank": 4}, "h1"))
    bilora = figure5.read_record(_record(tmp_path, "bilora", {"rank": 4}, "b1"))
    bilora["task"] = "counting"
    with pytest.raises(UserError, match="different tasks"):
        figure5.build(heart, bilora, tmp_path / "out")


def test_pick_pair_matches_task_backbone_and_seed(tmp_path):
    _record(tmp_path, "heart_lora", {"rank": 4}, "h1")
    _record(tmp_path, "bilora", {"rank": 4}, "b1")
    heart, bilora = figure5.pick_pair(tmp_path / "res", None)
    assert (heart["run_id"], bilora["run_id"]) == ("h1", "b1")
    with pytest.raises(UserError, match="for task 'mnist'"):
        figure5.pick_pair(tmp_path / "res", "mnist")


def test_missing_record_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        figure5.read_record(tmp_path / "nope.json")


def test_pick_pair_takes_the_papers_heart_lora_not_an_ablation_variant(tmp_path):
    """An epoch-mean score window (score_window_mini), a val search or a Swin run is not
    Figure 5's run."""
    _record(tmp_path, "heart_lora", {"rank": 4, "score_window": "epoch"}, "h0")
    swin = _record(tmp_path, "heart_lora", {"rank": 4}, "h00")
    swin.write_text(swin.read_text().replace('"vit_mini"', '"swin_mini"'))
    searched = _record(tmp_path, "heart_lora", {"rank": 4, "ne": 1}, "h1")
    record = json.loads(searched.read_text())
    searched.write_text(json.dumps({**record, "search": {"ne": [0, 1]}}))
    _record(tmp_path, "heart_lora", {"rank": 4, "score_window": "last_step"}, "h2")
    _record(tmp_path, "bilora", {"rank": 4}, "b1")
    heart, _ = figure5.pick_pair(tmp_path / "res", None)
    assert heart["run_id"] == "h2"


@pytest.mark.parametrize("copy_suite", ["a_ablation", "z_ablation"])
def test_pick_pair_names_a_run_stored_twice_by_its_main_record(tmp_path, copy_suite):
    """A run an ablation suite stored again under its own label (the score-window suite's
    "Heart-LoRA (last step)" copy of the main run) is drawn from the main record, whatever
    the folders' order."""
    main = _record(tmp_path, "heart_lora", {"rank": 4}, "h1")
    _record(tmp_path, "bilora", {"rank": 4}, "b1")
    copy = tmp_path / "res" / copy_suite
    copy.mkdir()
    record = json.loads(main.read_text())
    (copy / "h1.json").write_text(json.dumps(
        {**record, "suite": copy_suite, "label": "Heart-LoRA (last step)"}))
    heart, _ = figure5.pick_pair(tmp_path / "res", None)
    assert heart["label"] == "Heart-LoRA" and heart["_path"] == str(main)
