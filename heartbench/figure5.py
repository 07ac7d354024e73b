"""``python -m heartbench figure5``: the paper's Figure 5 from stored adapters.

Figure 5 compares the attention maps of Heart-LoRA and Bi-LoRA on the same image: per task,
a Heart-LoRA row and a Bi-LoRA row, columns the input image and the [CLS]-token attention to
every patch (mean over heads) in the first, a middle and the last block (ViT-B: the
paper's blocks 0, 3 and 10; another depth: first, depth // 2, last). Two tasks, one natural
and one structured (:data:`PREFERRED_TASKS`, else the first of each group with a pair). Each
task's two rows share one colour scale (0 to the largest attention of its maps) with its
colour bar, so the runs compare directly; under a Heart-LoRA map, the heads that block
masks (their q/v updates zeroed) are listed in red.

Records: without arguments, the pairs come from ``--results-dir`` (the main Heart-LoRA
variant at a fixed ne, and Bi-LoRA of the same benchmark, task, seed, eval protocol and
training setting, backbone included; never a fair-protocol run; lowest seed first); ``--tasks`` names the tasks; ``--heart`` and ``--bilora`` name one pair's record
files instead. A twin task's data is written first when its folder is missing (the same
writer ``run`` uses). The output is ``fig5_<benchmark>.{pdf,png,tex}`` in ``--out``;
``tables`` puts it into preview.tex. ``figure5`` with no argument rebuilds the committed
figure.

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

CAPTION_NOTE = ("Each map: the attention of the [CLS] token to every patch in the block's "
                "self-attention, mean over the heads, for the same test image under both "
                "adapters.")
PAPER_BLOCKS: tuple[int, ...] = (0, 3, 10)  # of ViT-B's 12 (the paper's Figure 5)
# One natural and one structured task: the paper's VTAB-1K task, then the twin's.
PREFERRED_TASKS: dict[str, tuple[str, ...]] = {"natural": ("caltech101", "digits8"),
                                               "structured": ("dsprites_loc", "counting")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="folder of run records to pick the pairs from (default: results)")
    parser.add_argument("--heart", type=Path, help="record file (.json) of one Heart-LoRA run")
    parser.add_argument("--bilora", type=Path, help="record file (.json) of its Bi-LoRA run")
    add_tasks(parser, "comma-separated tasks (default: one natural, one structured: " + ", ".join(
        f"{g} {' or '.join(t)}" for g, t in PREFERRED_TASKS.items()) + ", else the first)",
        old=("--task",))
    parser.add_argument("--image", type=int, default=0,
                        help="index of the test image of each task (default 0)")
    parser.add_argument("--out", type=Path, default=Path("paper"),
                        help="folder for fig5_<benchmark>.{pdf,png,tex} (default: paper/, where"
                             " the committed Figure 5 is replaced)")


def blocks_for(depth: int) -> list[int]:
    """The blocks drawn: the paper's 0, 3, 10 for 12 blocks, else first, middle, last."""
    if depth == 12:
        return list(PAPER_BLOCKS)
    return sorted({0, depth // 2, depth - 1})


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------
def read_record(path: Path) -> dict:
    from heartbench.results import validate_record

    if Path(path).is_dir():
        raise UserError(f"record {path} is a folder; expected a record file (<run_id>.json)")
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"record {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"record {path} is not readable JSON ({err})") from None
    except OSError as err:
        raise UserError(f"record {path} cannot be read ({err.strerror})") from None
    problem = validate_record(record)
    if problem is not None:
        raise UserError(f"record {path} is not a usable run record: {problem}")
    if record.get("status") != "done":
        raise UserError(f"record {path} is not a done run record (status {record['status']!r})")
    record["_path"] = str(path)
    return record


def heart_ne(record: dict) -> int | None:
    """The ne a Heart-LoRA record ran with: its config or grid, else the config default (a
    stored config without the key loads with it); None for other methods."""
    from heartbench.report.select import ne_of

    if record.get("method") != "heart_lora":
        return None
    ne = ne_of(record)
    if ne is None:
        from heartbench.adapters.base import get_method_class

        ne = get_method_class("heart_lora").config_cls.ne  # type: ignore[attr-defined]
    return ne


def check_pair(heart: dict, bilora: dict) -> None:
    """One line (UserError) unless ``heart`` is a Heart-LoRA run that masks heads (ne > 0),
    ``bilora`` a Bi-LoRA run, both on the same backbone, each with its adapter intact."""
    from heartbench.report.select import backbone_name
    from heartbench.results import adapter_kept, adapter_problem

    ne = heart_ne(heart)
    if heart.get("method") != "heart_lora" or not ne or ne <= 0:
        raise UserError(f"--heart record {heart['_path']} is {heart.get('method')!r} with ne = "
                        f"{ne}; expected a heart_lora record with ne > 0")
    if isinstance(heart.get("heart"), dict) and heart["heart"].get("mask") is None:
        raise UserError(f"--heart record {heart['_path']} stores no mask (heart.mask is null):"
                        f" its run never masked the ne = {ne} heads it promised")
    if bilora.get("method") != "bilora":
        raise UserError(f"--bilora record {bilora['_path']} is {bilora.get('method')!r}; "
                        "expected a bilora record")
    ours = [{k: (r.get("backbone") or {}).get(k) for k in ("name", "weights")}
            for r in (heart, bilora)]
    if ours[0] != ours[1]:
        raise UserError(f"records {heart['_path']} and {bilora['_path']} are of different "
                        f"backbones ({backbone_name(heart)} {ours[0]['weights']} vs "
                        f"{backbone_name(bilora)} {ours[1]['weights']}); expected one backbone")
    for record in (heart, bilora):
        if not adapter_kept(record):
            raise UserError(f"record {record['_path']} says its adapter was not kept "
                            "(adapter.kept = false); Figure 5 needs the adapter")
        problem = adapter_problem(record, record["_path"])
        if problem is not None:
            raise UserError(f"record {record['_path']}: {problem}")


def pick_pairs(results_dir: Path, tasks: list[str] | None) -> list[tuple[dict, dict]]:
    """The (Heart-LoRA, Bi-LoRA) record pairs to draw, one per task (module docstring)."""
    from heartbench.report.select import is_fixed_ne_heart, setting_id
    from heartbench.report.stats import task_order
    from heartbench.report.variants import is_fair
    from heartbench.results import load_records

    loaded = load_records(results_dir)
    # A fair-protocol run (trained on train800val200 after its own search) is never the
    # paper's figure: its Bi-LoRA would be drawn beside a Heart-LoRA trained otherwise.
    done = [r for r in loaded.done if r.get("shots") is None and not is_fair(r)
            and (r.get("adapter") or {}).get("file")]
    heart = [r for r in done if is_fixed_ne_heart(r) and not r.get("grid") and (heart_ne(r) or 0) > 0]
    bilora = [r for r in done if r.get("method") == "bilora"]

    def ident(r: dict) -> tuple:
        # The same data split, seed and training setting: the two maps differ by the method only.
        return (r["benchmark"], r["task"], r["seed"], str(r.get("eval_protocol")), setting_id(r))

    partners = {ident(r): r for r in sorted(bilora, key=lambda r: r["run_id"], reverse=True)}
    # A run stored by two suites (an ablation's copy of a main run) is the same adapter; the
    # plainest label (the main table's "Heart-LoRA") names it, then the suite: deterministic.
    pairs: dict[str, tuple[dict, dict]] = {}
    for h in sorted(heart, key=lambda r: (str(r["seed"]), r["benchmark"], r["task"],
                                          r["run_id"], len(r["label"]), r["suite"])):
        if ident(h) in partners:
            pairs.setdefault(h["task"], (h, partners[ident(h)]))
    if tasks is None:
        groups = {t: p[0].get("group") or "" for t, p in pairs.items()}
        order = task_order(groups)
        tasks = []
        for group, preferred in PREFERRED_TASKS.items():
            mine = [t for t in order if groups[t] == group]
            chosen = next((t for t in preferred if t in mine), mine[0] if mine else None)
            if chosen is not None:
                tasks.append(chosen)
    missing = [t for t in tasks if t not in pairs]
    if missing or not tasks:
        raise UserError(f"{results_dir}: no Heart-LoRA and Bi-LoRA records of the same task, "
                        "backbone and seed with adapters"
                        + (f" for task(s) {', '.join(missing)}" if missing else ""))
    chosen_pairs = [pairs[t] for t in tasks]
    for pair in chosen_pairs:
        for r in pair:
            r["_path"] = str(_record_path(results_dir, r))
    return chosen_pairs


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
    from heartbench.suite import activate

    activate(record)  # a plugin method's record: its plugin, as it ran
    b = record["backbone"]
    backbone = build_backbone(b["name"], record["num_classes"], weights=b.get("weights"),
                              drop_path_rate=0.0, pre_logits=b.get("pre_logits", False),
                              **(b.get("kwargs") or {}))
    method = load_adapter(adapter_path(record), backbone)
    backbone.model.eval()
    return backbone, method


def test_images(record: dict, size: int, indices: list[int]) -> Any:
    """Test images of the record's task, as the model sees them; a twin task's data is
    written first when its folder is missing (the writer ``run`` uses)."""
    import torch

    from heartbench.data.twin import ensure_twin_task
    from heartbench.rerun import spec_from_record
    from heartbench.train import make_dataset

    root = record.get("data_root")
    if root and not (Path(root) / record["task"]).is_dir() and ensure_twin_task(
            record["benchmark"], root, record["task"]):
        print(f"figure5: wrote the twin data of {record['task']} under {root}", flush=True)
    try:
        dataset = make_dataset(spec_from_record(record), "test", size, train=False)
    except (FileNotFoundError, UserError) as err:
        raise UserError(f"test images of {record['task']} under {root}: {err} (its data: "
                        f"`python -m heartbench data prepare {record['benchmark']} --out "
                        f"{root} --tasks {record['task']}`, or --results-dir records whose "
                        "data_root has it)") from None
    if any(i >= len(dataset) for i in indices):
        raise UserError(f"--image {max(indices)}: task {record['task']} has "
                        f"{len(dataset)} test images")
    return torch.stack([dataset[i][0] for i in indices])


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


def masked_heads(mask: list[list[int]] | None, layer: int) -> list[int]:
    return [h for h, m in enumerate(mask[layer]) if m == 0] if mask else []


def draw(out: Path, stem: str, panels: list[dict], layers: list[int], note: str) -> None:
    """Per task two rows (Heart-LoRA, Bi-LoRA): the input image, then the head-mean [CLS]
    attention after each block in ``layers``; one colour scale and bar per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    from heartbench.report.figures import COLOURBAR_TICK_PT

    rows = [(p, run) for p in panels for run in p["runs"]]
    with plt.rc_context({"font.size": 7, "pdf.fonttype": 42, "svg.hashsalt": "heartbench",
                         "path.simplify": False}):
        fig, axes = plt.subplots(len(rows), len(layers) + 1, squeeze=False,
                                 layout="constrained", figsize=(3.4, 0.95 * len(rows) + 0.55))
        for p in panels:
            p["norm"] = Normalize(0.0, max(float(run["maps"][layer][0].mean(0).max())
                                           for run in p["runs"] for layer in layers))
        for r, (p, run) in enumerate(rows):
            axes[r][0].imshow(_image_for_display(p["image"]), cmap="gray")
            axes[r][0].set_ylabel(f"{run['name']}\n{p['task']}", fontsize=7)
            for c, layer in enumerate(layers, start=1):
                ax = axes[r][c]
                image = ax.imshow(run["maps"][layer][0].mean(0), cmap="viridis",
                                  norm=p["norm"], interpolation="nearest")
                if r == 0:
                    ax.set_title(f"block {layer}", fontsize=7)
                if run["mask"] is not None:
                    heads = masked_heads(run["mask"], layer)
                    ax.set_xlabel("masked " + (",".join(map(str, heads)) or "none"),
                                  color="#b00000", fontsize=6, labelpad=1)
            if r == 0:
                axes[r][0].set_title("input", fontsize=7)
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
            if run is p["runs"][-1]:  # one bar beside the task's two rows
                first = rows.index((p, p["runs"][0]))
                bar = fig.colorbar(image, ax=[a for row in axes[first:r + 1] for a in row[1:]],
                                   location="right", fraction=0.05, pad=0.02)
                bar.ax.tick_params(labelsize=COLOURBAR_TICK_PT, length=2, pad=1)
                bar.locator = matplotlib.ticker.MaxNLocator(3)
                bar.update_ticks()
                bar.set_label("attention", fontsize=7)
        fig.suptitle(note, fontsize=7, color="#8b0000" if "twin" in note.lower() else "black")
        fig.savefig(out / f"{stem}.pdf", metadata={"CreationDate": None, "ModDate": None,
                                                   "Producer": None, "Creator": None})
        fig.savefig(out / f"{stem}.png", dpi=200, metadata={"Software": None})
        plt.close(fig)


def caption(panels: list[dict], layers: list[int], twin: bool, index: int) -> tuple[str, str]:
    from heartbench.report.latex import tex

    def who(r: dict) -> str:
        return (f"{tex(r['label'])} run {r['run_id']} (seed {r['seed']}, test acc. "
                f"{r['metrics']['test_acc']:.1f}\\%)")

    first = panels[0]["heart"]
    parts = []
    for p in panels:
        ne = heart_ne(p["heart"])
        masked = "; ".join(f"block {layer}: {', '.join(map(str, masked_heads(p['mask'], layer))) or 'none'}"
                           for layer in layers)
        parts.append(f"{tex(p['task'])} ({tex(p['heart'].get('group') or '')}; test image "
                     f"{index}): {who(p['heart'])} at ne = {ne} (masked heads {masked}) and "
                     f"{who(p['bilora'])}")
    text = (f"Attention maps of Heart-LoRA vs Bi-LoRA on {tex(first['benchmark'])} (backbone "
            f"{tex(first['backbone']['name'])}), blocks {', '.join(map(str, layers))} "
            f"(first, middle, last{'; the paper: 0, 3, 10 of ViT-B' if layers != list(PAPER_BLOCKS) else ''}). "
            f"{'. '.join(parts)}. {CAPTION_NOTE} Each task's two rows share one colour scale "
            "(0 to the largest value of their maps; colour bar at the right); red: the heads "
            "whose q/v updates Heart-LoRA masks in that block.")
    if twin:
        return "T5", ("\\textbf{CPU twin, not the paper's data} (counterpart of the paper's "
                      "Figure 5). " + text)
    return "5", text


def build(pairs: list[tuple[dict, dict]], out: Path, image: int = 0) -> Path:
    """Draw Figure 5 for the pairs (one per task); returns the PNG path."""
    from heartbench.report.figures import Figure, twin_note
    from heartbench.report.latex import environment

    if image < 0:
        raise UserError("--image must be >= 0")
    benchmarks = {r["benchmark"] for pair in pairs for r in pair}
    if len(benchmarks) > 1 or any(h["task"] != b["task"] for h, b in pairs):
        raise UserError("records " + ", ".join(r["_path"] for pair in pairs for r in pair)
                        + " are not pairs of one task of one benchmark")
    panels, layers = [], []
    for heart, bilora in pairs:
        panel: dict[str, Any] = {"task": heart["task"], "heart": heart, "bilora": bilora,
                                 "runs": []}
        for record in (heart, bilora):
            backbone, method = load_model(record)
            if backbone.arch != "vit":
                raise UserError(f"record {record['_path']}: Figure 5 draws ViT attention; "
                                f"backbone {backbone.name} is {backbone.arch}")
            layers = blocks_for(len(backbone.sites))
            if "image" not in panel:
                panel["image"] = test_images(record, backbone.input_size, [image])[0]
            mask = head_mask(method, record) if record is heart else None
            panel["mask"] = panel.get("mask") or mask
            panel["runs"].append({"name": record["label"], "mask": mask, "maps": attention_maps(
                backbone, panel["image"][None], layers)})
        panels.append(panel)
    out.mkdir(parents=True, exist_ok=True)
    benchmark = pairs[0][0]["benchmark"]
    stem = f"fig5_{benchmark}"
    note = twin_note(benchmark)
    draw(out, stem, panels, layers, "\n".join(
        t for t in ("[CLS] attention, Heart-LoRA vs Bi-LoRA", note) if t))
    number, text = caption(panels, layers, bool(note), image)
    figure = Figure(stem, text, number, wide=False)
    tex_path = out / f"{stem}.tex"
    tmp = tex_path.with_name(f".{tex_path.name}.tmp")
    tmp.write_text(environment().get_template("figure.tex.j2").render(fig=figure),
                   encoding="utf-8")
    tmp.replace(tex_path)
    return out / f"{stem}.png"


def main(args: argparse.Namespace) -> int:
    if (args.heart is None) != (args.bilora is None):
        raise UserError("give both --heart and --bilora, or neither (pick from --results-dir)")
    if args.image < 0:
        raise UserError(f"--image must be >= 0 (an index into the test split), got {args.image}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; expected a folder for the figure")
    if args.heart is not None:
        if args.tasks:
            raise UserError("--tasks picks pairs from --results-dir; not with --heart/--bilora")
        pairs = [(read_record(args.heart), read_record(args.bilora))]
    else:
        pairs = pick_pairs(args.results_dir, split_names(args.tasks))
    for heart, bilora in pairs:
        check_pair(heart, bilora)
    print(f"figure5: {pairs[0][0]['benchmark']}: tasks {', '.join(h['task'] for h, _ in pairs)}:"
          " loading Heart-LoRA and Bi-LoRA with their adapters, then drawing", flush=True)
    png = build(pairs, args.out, args.image)
    used = "; ".join(f"{h['_path']} and {b['_path']}" for h, b in pairs)
    print(f"wrote {png} and {png.with_suffix('.pdf').name}, {png.with_suffix('.tex').name} "
          f"(records {used})")
    return 0
