"""``python -m heartbench figure5``: the paper's Figure 5 from two stored adapters.

Figure 5 compares the attention maps of Heart-LoRA and Bi-LoRA on the same images: here,
for one task, the [CLS]-token attention to every patch, per head, in the last layer(s), of
a Heart-LoRA run and a Bi-LoRA run (each rebuilt from its record: backbone, weights and the
adapter stored beside the record as ``<run_id>.safetensors``), on the first few test images.
Heart-LoRA's masked heads (mask 0: their q/v updates are zeroed) are framed in red and
marked "masked".

Records: ``--heart`` and ``--bilora`` name two record files; without them the pair is taken
from ``--results-dir`` for ``--tasks`` (default: the first task with both): the main
Heart-LoRA variant (global Taylor score) and Bi-LoRA, same benchmark, backbone and seed,
the lowest seed first. The output is ``fig5_<benchmark>.{pdf,png,tex}`` in ``--out`` (the
.tex holds the figure and its caption; ``tables`` puts it into preview.tex).

This module imports torch (it runs the models); the report package does not.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from heartbench.errors import UserError
from heartbench.options import add_tasks, split_names

CAPTION_NOTE = ("Each map: the attention of the [CLS] token to every patch, one panel per "
                "head, for the same test image under both adapters.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="folder of run records to pick the pair from (default: results)")
    parser.add_argument("--heart", type=Path, help="record file (.json) of the Heart-LoRA run")
    parser.add_argument("--bilora", type=Path, help="record file (.json) of the Bi-LoRA run")
    add_tasks(parser, "task(s) to pick the pair for, comma-separated: the first listed that"
              " has both records (default: the first task with both)", old=("--task",))
    parser.add_argument("--images", type=int, default=2, help="test images (default 2)")
    parser.add_argument("--layers", type=int, default=1,
                        help="how many of the last layers to draw (default 1)")
    parser.add_argument("--out", type=Path, default=Path("paper"),
                        help="folder for fig5_<benchmark>.{pdf,png,tex} (default: paper/, where"
                             " the committed Figure 5 is replaced)")


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------
def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"record {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"record {path} is not readable JSON ({err})") from None
    if not isinstance(record, dict) or record.get("status") != "done":
        raise UserError(f"record {path} is not a done run record")
    record["_path"] = str(path)
    return record


def pick_pair(results_dir: Path, tasks: str | list[str] | None) -> tuple[dict, dict]:
    """The (Heart-LoRA, Bi-LoRA) records to compare (see the module docstring): of the first
    of ``tasks`` (a name or a list) that has both, or of any task when None."""
    tasks = [tasks] if isinstance(tasks, str) else tasks
    from heartbench.report.select import is_fixed_ne_heart
    from heartbench.results import load_records

    loaded = load_records(results_dir)
    done = [r for r in loaded.done if r.get("shots") is None
            and (r.get("adapter") or {}).get("file")]
    heart = [r for r in done if is_fixed_ne_heart(r) and not r.get("grid")]
    bilora = [r for r in done if r.get("method") == "bilora"]

    def ident(r: dict) -> tuple:
        return (r["benchmark"], r["task"], (r.get("backbone") or {}).get("name"), r["seed"])

    partners = {ident(r): r for r in sorted(bilora, key=lambda r: r["run_id"], reverse=True)}
    # A run stored by two suites (an ablation's copy of a main run) is the same adapter; the
    # plainest label (the main table's "Heart-LoRA") names it, then the suite: deterministic.
    order = {t: i for i, t in enumerate(tasks or [])}
    pairs = [(h, partners[ident(h)]) for h in sorted(
        heart, key=lambda r: (order.get(r["task"], 0), str(r["seed"]), r["benchmark"],
                              r["task"], r["run_id"], len(r["label"]), r["suite"]))
        if ident(h) in partners and (tasks is None or h["task"] in order)]
    if not pairs:
        which = f" for task {' or '.join(map(repr, tasks))}" if tasks else ""
        raise UserError(f"{results_dir}: no Heart-LoRA and Bi-LoRA records of the same task, "
                        f"backbone and seed{which} with adapters")
    heart_record, bilora_record = pairs[0]
    for r in (heart_record, bilora_record):
        r["_path"] = str(_record_path(results_dir, r))
    return heart_record, bilora_record


def _record_path(results_dir: Path, record: dict) -> Path:
    return Path(results_dir) / str(record["suite"]) / f"{record['run_id']}.json"


def adapter_path(record: dict) -> Path:
    path = Path(record["_path"]).parent / record["adapter"]["file"]
    if not path.is_file():
        raise UserError(f"adapter file {path} of record {record['_path']} does not exist")
    return path


# ---------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------
def load_model(record: dict) -> tuple[Any, Any]:
    """The record's backbone with its stored adapter (and head) loaded, in eval mode."""
    from heartbench.adapters.base import load_adapter
    from heartbench.backbones import build_backbone

    b = record["backbone"]
    backbone = build_backbone(b["name"], record["num_classes"], weights=b.get("weights"),
                              drop_path_rate=0.0, **(b.get("kwargs") or {}))
    method = load_adapter(adapter_path(record), backbone)
    backbone.model.eval()
    return backbone, method


def test_images(record: dict, size: int, count: int) -> Any:
    """The first ``count`` test images of the record's task, as the model sees them."""
    import torch

    from heartbench.train import make_dataset, spec_from_record

    try:
        dataset = make_dataset(spec_from_record(record), "test", size, train=False)
    except (FileNotFoundError, UserError) as err:
        raise UserError(f"test images of {record['task']} under {record.get('data_root')}: "
                        f"{err} (make the twin data with `python -m heartbench data ...`)") from None
    return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])


def cls_attention(attn: Any, x: Any, prefix: int) -> Any:
    """[CLS] attention to the patch tokens, (batch, heads, patches), of a timm Attention.

    Recomputed from the module's input with its own (possibly adapted) qkv projection, as
    timm's fused path computes it: softmax(q k^T * scale) after q_norm / k_norm.
    """
    import torch

    batch, tokens, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)
    return weights[:, :, 0, prefix:]


def attention_maps(backbone: Any, images: Any, layers: list[int]) -> dict[int, Any]:
    """layer -> (images, heads, side, side) [CLS] attention maps (numpy)."""
    import torch

    inputs: dict[int, Any] = {}
    hooks = [site.attn.register_forward_hook(
        lambda module, args, output, layer=site.layer: inputs.__setitem__(layer, args[0]))
        for site in backbone.sites if site.layer in layers]
    try:
        with torch.no_grad():
            backbone.model(images)
            prefix = int(getattr(backbone.model, "num_prefix_tokens", 1))
            out = {}
            for layer in layers:
                site = next(s for s in backbone.sites if s.layer == layer)
                maps = cls_attention(site.attn, inputs[layer], prefix)
                side = math.isqrt(maps.shape[-1])
                out[layer] = maps.reshape(*maps.shape[:2], side, side).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return out


def head_mask(method: Any, record: dict) -> list[list[int]] | None:
    """Heart-LoRA's mask per layer and head (1 = update kept), or None for other methods."""
    mask = getattr(method, "mask", None) or (record.get("heart") or {}).get("mask")
    return [list(map(int, m)) for m in mask] if mask else None


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------
def _image_for_display(image: Any) -> Any:
    import numpy as np

    array = image.permute(1, 2, 0).numpy()
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return array[..., 0] if array.shape[-1] == 1 else array


def draw(out: Path, stem: str, images: Any, runs: list[tuple[str, dict[int, Any], Any]],
         layers: list[int], note: str) -> None:
    """Rows: per image, per run, per layer; columns: the input image, then one per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = next(iter(runs[0][1].values())).shape[1]
    rows = [(i, name, maps, mask, layer) for i in range(len(images))
            for name, maps, mask in runs for layer in layers]
    with plt.rc_context({"font.size": 6, "pdf.fonttype": 42, "svg.hashsalt": "heartbench"}):
        fig, axes = plt.subplots(len(rows), heads + 1, squeeze=False, layout="constrained",
                                 figsize=(7.0, 0.7 * len(rows) + 0.5))
        for r, (i, name, maps, mask, layer) in enumerate(rows):
            axes[r][0].imshow(_image_for_display(images[i]), cmap="gray")
            axes[r][0].set_ylabel(f"{name}\nimg {i}, layer {layer}", fontsize=5)
            for h in range(heads):
                ax = axes[r][h + 1]
                ax.imshow(maps[layer][i, h], cmap="viridis", interpolation="nearest")
                masked = mask is not None and mask[layer][h] == 0
                if masked:
                    for spine in ax.spines.values():
                        spine.set(color="red", linewidth=1.5)
                    ax.set_xlabel("masked", color="red", fontsize=5, labelpad=1)
                if r == 0:
                    ax.set_title(f"head {h}", fontsize=5.5)
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle(note, fontsize=6.5, color="#8b0000" if "twin" in note.lower() else "black")
        fig.savefig(out / f"{stem}.pdf", metadata={"CreationDate": None, "ModDate": None,
                                                   "Producer": None, "Creator": None})
        fig.savefig(out / f"{stem}.png", dpi=200, metadata={"Software": None})
        plt.close(fig)


def caption(heart: dict, bilora: dict, layers: list[int], masked: list[int], twin: bool,
            count: int) -> tuple[str, str]:
    from heartbench.report.latex import tex

    def who(r: dict) -> str:
        return (f"{tex(r['label'])} (run {r['run_id']}, seed {r['seed']}, test acc. "
                f"{r['metrics']['test_acc']:.1f}\\%)")

    ne = (heart.get("method_config") or {}).get("ne")
    text = (f"Attention maps of Heart-LoRA vs Bi-LoRA on task {tex(heart['task'])} "
            f"({tex(heart['benchmark'])}, backbone {tex(heart['backbone']['name'])}): "
            f"{who(heart)} and {who(bilora)}, first {count} test image(s), layer(s) "
            f"{', '.join(map(str, layers))}. {CAPTION_NOTE} Red frame: a head Heart-LoRA masks "
            f"(ne = {ne}; heads {', '.join(map(str, masked)) or 'none'} in the last layer shown).")
    if twin:
        return "T5", ("\\textbf{CPU twin, not the paper's data} (counterpart of the paper's "
                      "Figure 5). " + text)
    return "5", text


def build(heart: dict, bilora: dict, out: Path, images: int = 2, last_layers: int = 1) -> Path:
    """Draw Figure 5 for the pair; returns the PNG path."""
    from heartbench.report.figures import twin_note

    if heart["task"] != bilora["task"] or heart["benchmark"] != bilora["benchmark"]:
        raise UserError(f"records {heart['_path']} and {bilora['_path']} are of different tasks "
                        f"({heart['benchmark']}/{heart['task']} vs "
                        f"{bilora['benchmark']}/{bilora['task']})")
    if images < 1 or last_layers < 1:
        raise UserError("--images and --layers must be >= 1")
    runs = []
    batch = None
    layers: list[int] = []
    for record in (heart, bilora):
        backbone, method = load_model(record)
        if backbone.arch != "vit":
            raise UserError(f"record {record['_path']}: Figure 5 draws ViT attention; backbone "
                            f"{backbone.name} is {backbone.arch}")
        layers = [s.layer for s in backbone.sites][-last_layers:]
        if batch is None:
            batch = test_images(record, backbone.input_size, images)
        runs.append((record["label"], attention_maps(backbone, batch, layers),
                     head_mask(method, record)))
    out.mkdir(parents=True, exist_ok=True)
    stem = f"fig5_{heart['benchmark']}"
    note = twin_note(heart["benchmark"])
    title = f"{heart['task']}: [CLS] attention per head, {runs[0][0]} vs {runs[1][0]}"
    draw(out, stem, batch, runs, layers, "\n".join(t for t in (title, note) if t))
    mask = runs[0][2]
    masked = [h for h, m in enumerate(mask[layers[-1]]) if m == 0] if mask else []
    number, text = caption(heart, bilora, layers, masked, bool(note), len(batch))
    from heartbench.report.figures import Figure
    from heartbench.report.latex import environment

    figure = Figure(stem, text, number, wide=True)
    (out / f"{stem}.tex").write_text(
        environment().get_template("figure.tex.j2").render(fig=figure), encoding="utf-8")
    return out / f"{stem}.png"


def main(args: argparse.Namespace) -> int:
    if (args.heart is None) != (args.bilora is None):
        raise UserError("give both --heart and --bilora, or neither (pick from --results-dir)")
    if args.heart is not None:
        heart, bilora = read_record(args.heart), read_record(args.bilora)
    else:
        heart, bilora = pick_pair(args.results_dir, split_names(args.tasks))
    print(f"figure5: {heart['benchmark']}/{heart['task']}: loading {heart['label']} and"
          f" {bilora['label']} with their adapters, then drawing", flush=True)
    png = build(heart, bilora, args.out, args.images, args.layers)
    print(f"wrote {png} and {png.with_suffix('.pdf').name}, {png.with_suffix('.tex').name} "
          f"(Heart-LoRA {heart['_path']}, Bi-LoRA {bilora['_path']})")
    return 0
