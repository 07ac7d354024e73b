"""What a run record is, read from its fields alone: backbone, Heart-LoRA variant, row key, ne.

The report package's leaf (it imports nothing of it): :mod:`heartbench.report.table_specs`
places records with these, and :mod:`heartbench.report.reference` reads the table registry,
so neither may depend on :mod:`heartbench.report.select`, which re-exports every name here.
"""

from __future__ import annotations

import re
from typing import Any

TAYLOR_SCORES: tuple[str, ...] = ("taylor", "neg_taylor", "abs_taylor")
# Training-recipe keys of a method's config with the value the source of the paper's row
# used (docs/recipes.md): a record that trained otherwise is named in its table's caption.
# Full, Linear, VPT: VPT's own recipes (its AdamW / SGD). Records stored before the key had
# the trainer's AdamW ("adamw", the value a missing key stands for).
PAPER_RECIPE: dict[str, dict[str, Any]] = {
    "full": {"optimizer": "vpt_adamw"}, "linear": {"optimizer": "sgd"},
    "vpt_shallow": {"optimizer": "sgd"}, "vpt_deep": {"optimizer": "sgd"}}
MISSING_RECIPE: dict[str, Any] = {"optimizer": "adamw"}


def recipe_deviations(record: dict) -> list[tuple[str, Any, Any]]:
    """(key, value, the paper's value) for each recipe key where ``record`` trained otherwise."""
    config = record.get("method_config") or {}
    out = []
    for key, paper in PAPER_RECIPE.get(record.get("method"), {}).items():
        value = config.get(key, MISSING_RECIPE.get(key))
        if value != paper:
            out.append((key, value, paper))
    return out


def legacy_schedule(record: dict) -> bool:
    """Whether the run stepped its schedule one epoch ahead of the reference loops
    (``train.schedule_step`` "next_epoch"; a record from before the key did)."""
    return (record.get("train") or {}).get("schedule_step", "next_epoch") == "next_epoch"


def is_fair(record: dict) -> bool:
    """A record of a fair-protocol suite (``suites/*_fair.toml``: equal budgets, chosen on
    val200): it feeds the fair comparison tables only, never the paper's tables or figures."""
    return str(record.get("suite") or "").endswith("_fair")


def normalize_label(label: str) -> str:
    """Label for matching measured rows to printed ones: case, punctuation and dagger ignored."""
    text = label.replace("$^\\dagger$", "").replace("\u2020", "").lower()
    return re.sub(r"[^a-z0-9]", "", text)


def backbone_name(record: dict) -> str:
    return str((record.get("backbone") or {}).get("name") or "")


def is_swin(record: dict) -> bool:
    return "swin" in backbone_name(record).lower()


def heart_key(record: dict) -> str | None:
    """The Heart-LoRA variant of a record (None for other methods). Scores read over a
    window other than Algorithm 1's, chosen in the suite (``score_window`` stored), make a
    variant of their own; a record from before that key is the Heart-LoRA of its time (its
    configuration, :func:`heartbench.report.select.config_id`, still tells it apart from
    later runs)."""
    if record["method"] != "heart_lora":
        return None
    cfg = record.get("method_config") or {}
    window = cfg.get("score_window", "last_step")
    key = _heart_variant(cfg)
    return key if window == "last_step" else f"{key}_window_{window}"


def _heart_variant(cfg: dict) -> str:
    score = cfg.get("score", "taylor")
    mode = cfg.get("mode", "global")
    bits = cfg.get("bits", 1)
    if score == "front":
        return "front"
    if score in TAYLOR_SCORES:
        if mode == "per_layer":
            return "heart_lora_per_layer"
        return "heart_lora_fp32" if bits is not None and bits >= 32 else "heart_lora"
    if mode == "per_layer" and score == "weight_l2":
        return "heart_lora_per_layer_weight"
    if mode == "per_layer" and score == "grad_l2":
        return "heart_lora_per_layer_grad"
    return f"heart_lora_{mode}_{score}"


def row_key(record: dict) -> str:
    """What a measured row is matched on: the Heart-LoRA variant, else the label."""
    return heart_key(record) or normalize_label(record["label"])


def is_vtab_like(record: dict) -> bool:
    return record.get("group") is not None and record.get("shots") is None


def ne_of(record: dict) -> int | None:
    value = (record.get("method_config") or {}).get("ne")
    if value is None:
        value = (record.get("grid") or {}).get("ne")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
