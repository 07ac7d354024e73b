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


GROUPS = {"histology": "specialized", "digits8": "natural", "mnist": "natural",
          "counting": "structured", "location": "structured"}


def _record(tmp_path: Path, method: str, config: dict, run_id: str, mask=None,
            task: str = "histology") -> Path:
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
        "task": task, "group": GROUPS[task],
        "label": {"bilora": "Bi-LoRA"}.get(method, "Heart-LoRA"),
        "method": method, "method_config": config, "grid": {}, "seed": 0, "shots": None,
        "num_classes": 4, "backbone": {"name": "vit_mini", "weights": None, "kwargs": {}},
        "adapter": {"file": f"{run_id}.safetensors"}, "metrics": {"test_acc": 50.0},
        "heart": {"mask": mask} if mask else None, "data_root": str(tmp_path / "data"),
        "search": {}, "train": {"epochs": 1, "normalize": False}, "eval_protocol": "last",
    }
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps(record))
    return path


def _fake_images(monkeypatch):
    monkeypatch.setattr(figure5, "test_images",
                        lambda record, size, indices: torch.rand(len(indices), 3, size, size,
                                                                 generator=torch.Generator().manual_seed(0)))


def test_blocks_are_the_papers_for_vit_b_else_first_middle_last():
    assert figure5.blocks_for(12) == [0, 3, 10]
    assert figure5.blocks_for(6) == [0, 3, 5]
    assert figure5.blocks_for(1) == [0]


def test_figure5_two_tasks_three_blocks_one_scale_per_task(tmp_path, monkeypatch):
    """Two tasks x (Heart-LoRA, Bi-LoRA) rows; columns: the image and blocks first, middle,
    last; the two rows of a task share one colour scale (0 to their maps' largest value,
    recomputed here from the adapters), with a colour bar; masked heads named per block."""
    import matplotlib.axes

    heads = tiny().sites[0].num_heads
    depth = len(tiny().sites)
    mask = [[0, 1] + [1] * (heads - 2)] * depth
    pairs = []
    for task in ("digits8", "counting"):
        heart = figure5.read_record(_record(tmp_path, "heart_lora", {"rank": 4, "ne": 1},
                                            f"h{task}", mask, task=task))
        bilora = figure5.read_record(_record(tmp_path, "bilora", {"rank": 4}, f"b{task}",
                                             task=task))
        pairs.append((heart, bilora))
    _fake_images(monkeypatch)
    load = figure5.load_model  # no weights file: the backbone's own weights from a fixed seed
    monkeypatch.setattr(figure5, "load_model", lambda r: (torch.manual_seed(0), load(r))[1])
    shown, labels = [], []
    imshow, xlabel = matplotlib.axes.Axes.imshow, matplotlib.axes.Axes.set_xlabel
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow",
                        lambda self, data, *a, **k: (shown.append((data, k.get("norm"))),
                                                     imshow(self, data, *a, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel",
                        lambda self, t, *a, **k: (labels.append(t), xlabel(self, t, *a, **k))[1])
    png = figure5.build(pairs, tmp_path / "out")
    assert png.read_bytes()[:4] == b"\x89PNG"
    blocks = figure5.blocks_for(depth)
    maps = [m for m in shown if m[1] is not None]
    assert len(maps) == 2 * 2 * len(blocks)  # tasks x runs x blocks, plus 4 input images
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for t, (heart, bilora) in enumerate(pairs):
        mine = maps[t * 2 * len(blocks):(t + 1) * 2 * len(blocks)]
        assert len({id(norm) for _, norm in mine}) == 1  # one scale per task
        expected = 0.0
        for record in (heart, bilora):
            backbone, _ = figure5.load_model(record)
            computed = figure5.attention_maps(backbone, image, blocks)
            expected = max(expected, *(float(computed[b][0].mean(0).max()) for b in blocks))
        assert mine[0][1].vmin == 0.0 and mine[0][1].vmax == pytest.approx(expected, rel=1e-5)
    assert labels.count("masked 0") == 2 * len(blocks)  # under each Heart-LoRA map
    tex = (tmp_path / "out" / "fig5_vtab_mini.tex").read_text()
    assert "\\renewcommand{\\thefigure}{T5}" in tex and "Needs \\usepackage{graphicx}" in tex
    assert f"blocks {', '.join(map(str, blocks))}" in tex and "block 0: 0" in tex


def test_figure5_refuses_a_pair_of_different_tasks(tmp_path):
    heart = figure5.read_record(_record(tmp_path, "heart_lora", {"rank": 4}, "h1"))
    bilora = figure5.read_record(_record(tmp_path, "bilora", {"rank": 4}, "b1"))
    bilora["task"] = "counting"
    with pytest.raises(UserError, match="not pairs of one task"):
        figure5.build([(heart, bilora)], tmp_path / "out")


def test_pick_pairs_default_is_one_natural_and_one_structured_task(tmp_path):
    for task in ("histology", "mnist", "digits8", "location", "counting"):
        _record(tmp_path, "heart_lora", {"rank": 4}, f"h{task}", task=task)
        _record(tmp_path, "bilora", {"rank": 4}, f"b{task}", task=task)
    pairs = figure5.pick_pairs(tmp_path / "res", None)
    assert [h["task"] for h, _ in pairs] == ["digits8", "counting"]  # PREFERRED_TASKS
    assert all((h["run_id"], b["run_id"]) == (f"h{h['task']}", f"b{h['task']}") for h, b in pairs)
    with pytest.raises(UserError, match="for task\\(s\\) retina"):
        figure5.pick_pairs(tmp_path / "res", ["retina"])


def test_test_images_writes_missing_twin_data_first(tmp_path, monkeypatch):
    """A fresh clone has no twin data: figure5 writes it (run's writer), no hint to follow."""
    written = []

    def fake_ensure(benchmark, root, task):
        written.append((benchmark, str(root), task))
        raise UserError("stop here")

    import heartbench.data.twin as twin

    monkeypatch.setattr(twin, "ensure_twin_task", fake_ensure)
    record = json.loads(_record(tmp_path, "bilora", {"rank": 4}, "b1").read_text())
    with pytest.raises(UserError, match="stop here"):
        figure5.test_images(record, 32, [0])
    assert written == [("vtab_mini", str(tmp_path / "data"), "histology")]


def test_figure5_hint_names_a_command_not_dots(tmp_path, monkeypatch):
    import heartbench.data.twin as twin

    monkeypatch.setattr(twin, "ensure_twin_task", lambda *a: False)
    record = json.loads(_record(tmp_path, "bilora", {"rank": 4}, "b1").read_text())
    with pytest.raises(UserError) as err:
        figure5.test_images(record, 32, [0])
    assert "..." not in str(err.value)
    assert f"data prepare vtab_mini --out {tmp_path / 'data'} --tasks histology" in str(err.value)


@pytest.mark.slow
def test_figure5_without_arguments_rebuilds_the_committed_figure(tmp_path, monkeypatch):
    """On a fresh clone (no twin data: written into the temporary folder), plain `figure5`
    rebuilds the committed paper/fig5_* byte for byte."""
    import argparse

    committed = sorted((ROOT / "paper").glob("fig5_*"))
    if not committed or not (ROOT / "results" / "vtab_mini").is_dir():
        pytest.skip("no committed Figure 5 or records")
    monkeypatch.chdir(tmp_path)  # the records' data_root (data/vtab-mini) is made here
    (tmp_path / "weights").symlink_to(ROOT / "weights")  # their weights: paths of the checkout
    parser = argparse.ArgumentParser()
    figure5.add_arguments(parser)
    args = parser.parse_args(["--results-dir", str(ROOT / "results"), "--out", "out"])
    assert figure5.main(args) == 0
    for path in committed:
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes(), path.name


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
    heart, _ = figure5.pick_pairs(tmp_path / "res", ["histology"])[0]
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
    heart, _ = figure5.pick_pairs(tmp_path / "res", ["histology"])[0]
    assert heart["label"] == "Heart-LoRA" and heart["_path"] == str(main)


def test_pick_pair_takes_bilora_of_the_same_protocol_and_setting(tmp_path):
    """The committed figure once drew the fair suite's Bi-LoRA (searched on val200, trained on
    train800val200) beside vtab_mini's Heart-LoRA: a partner of another protocol, suite kind
    or training setting is not a pair, whatever its run id's order."""
    _record(tmp_path, "heart_lora", {"rank": 4}, "h1")
    plain = _record(tmp_path, "bilora", {"rank": 4}, "b1")
    record = json.loads(plain.read_text())
    fair = tmp_path / "res" / "vtab_mini_fair"
    fair.mkdir()
    (fair / "z9.json").write_text(json.dumps(
        {**record, "run_id": "z9", "suite": "vtab_mini_fair", "eval_protocol": "val"}))
    (tmp_path / "res" / "suite" / "z8.json").write_text(json.dumps(
        {**record, "run_id": "z8", "train": {**record["train"], "epochs": 7}}))
    _, bilora = figure5.pick_pairs(tmp_path / "res", ["histology"])[0]
    assert bilora["run_id"] == "b1"
    plain.unlink()
    with pytest.raises(UserError, match="for task\\(s\\) histology"):
        figure5.pick_pairs(tmp_path / "res", ["histology"])
