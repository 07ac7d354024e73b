"""Heart-LoRA: Bi-LoRA (or fp32 LoRA) plus head-level responsiveness masks.

Responsiveness (Eq. 5, first-order Taylor): for head i of a target (q or v), the sum of
grad * weight over head i's rows of the up-projection B, using the weight the forward pass
really uses (the quantised B when bits < 32) and the gradient of the loss with respect to
it. This equals the gradient of a per-head gate on the head's update at gate = 1, which the
tests check with autograd. A is shared by all heads and is not split.

What each score variant reads (the same at 32 bits; they differ only for quantised B):
- taylor, neg_taylor, abs_taylor: sum over the head's rows of (forward B) * dL/d(forward B),
  negated, or the absolute value of that sum per layer and target;
- weight_l2: L2 norm of the head's rows of the *latent* (trainable, unquantised) B, what
  Algorithm 1's ``get_weight(adapter)`` returns for Bi-LoRA's QLinear (a 1-bit B has nearly
  equal per-head norms, so the quantised B would pick near-arbitrary heads);
- grad_l2: L2 norm of dL/d(latent B), the parameter's gradient (``get_grad(adapter)``);
  ``l2_source="forward"`` reads both L2 norms from the forward B and its gradient instead
  (what heartbench did before the key existed: the legacy value for older records);
- front: the first ne heads; random: ne heads drawn with ``mask_seed``.

When (``score_window``): ``"last_step"`` (default) reads weight and gradient once, at the
last step of the last warm-up epoch (the weight that step's forward used and that step's
gradient), as Algorithm 1 reads them once after the warm-up; ``"epoch"`` averages them over
every step of the last warm-up epoch. Hooks on B's gradient gather them: no extra forward or
backward pass. Then the ``ne`` lowest-scoring heads get their q and v *updates* zeroed (the
pretrained heads keep working) and stay masked (``recompute=True`` recomputes after every
later epoch).

Selection: ``mode="global"`` sums scores over q, v and all layers with the same head count
(ViT: all layers; Swin: one stage) and masks the same heads in each of them; ``per_layer``
(Heart-LoRA dagger) picks heads per layer. On Swin, ``ratio`` gives the masked fraction of
each stage's heads (0.25 on Swin-B: 1, 2, 4, 8).

Storage: masked heads' rows of B are not written, so the stored size shrinks by exactly
those rows; the mask itself travels as metadata.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from heartbench.adapters.base import parse_targets, register, require
from heartbench.adapters.bilora import BiLoRA, BiLoRAConfig
from heartbench.adapters.lora import LowRankDelta
from heartbench.backbones import Backbone
from heartbench.errors import one_of

SCORES = ("taylor", "neg_taylor", "abs_taylor", "weight_l2", "grad_l2", "front", "random")
MODES = ("global", "per_layer")
WINDOWS = ("last_step", "epoch")
L2_SOURCES = ("latent", "forward")
# The per-head quantities gathered from gradients; every score variant derives from them.
RAW = ("taylor", "weight_l2", "grad_l2")
# Planning refuses a run whose heads would be scored on adapters that have not trained:
# fewer optimiser steps before the scores are read, or a mean lr of those steps under this
# fraction of train.lr (one per-epoch warm-up epoch: every step at warmup_lr_init).
MIN_STEPS_BEFORE_SCORING = 1
MIN_LR_FRACTION_BEFORE_SCORING = 0.25


@dataclass
class HeartLoRAConfig(BiLoRAConfig):
    ne: int = 3
    ratio: float = 0.0  # > 0: mask round(ratio * heads) per group of equal head count (Swin)
    score: str = "taylor"
    mode: str = "global"
    mask_epoch: int = -1  # first masked epoch (0-based); -1: the trainer's warm-up epochs
    recompute: bool = False
    mask_seed: int = 0
    score_window: str = "last_step"  # or "epoch": the average over the last warm-up epoch
    l2_source: str = "latent"  # B read by weight_l2/grad_l2; "forward": the quantised B
    # Records stored before these keys scored over the epoch, with L2 on the forward B.
    legacy: ClassVar[dict[str, Any]] = {**BiLoRAConfig.legacy, "score_window": "epoch",
                                        "l2_source": "forward"}

    def validate(self) -> None:
        super().validate()
        require(self.ne >= 0, f"ne must be >= 0, got {self.ne}")
        require(0.0 <= self.ratio < 1.0, f"ratio must be in [0, 1), got {self.ratio}")
        if self.score not in SCORES:
            raise one_of("score", self.score, SCORES)
        if self.mode not in MODES:
            raise one_of("mode", self.mode, MODES)
        if self.score_window not in WINDOWS:
            raise one_of("score_window", self.score_window, WINDOWS)
        if self.l2_source not in L2_SOURCES:
            raise one_of("l2_source", self.l2_source, L2_SOURCES)
        require(self.targets != "qkv", "heart_lora needs separate targets (e.g. 'qv'), not 'qkv'")


def score_variant(raw: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """One score per (target, head) from the raw gradient statistics of one layer."""
    if kind == "taylor":
        return raw["taylor"]
    if kind == "neg_taylor":
        return -raw["taylor"]
    if kind == "abs_taylor":
        return raw["taylor"].abs()
    return raw[kind]


def select_heads(scores: torch.Tensor, ne: int) -> torch.Tensor:
    """Indices of the ``ne`` lowest scores (ties: lower index first), as Algorithm 1."""
    return torch.argsort(scores, stable=True)[:ne]


@register("heart_lora")
class HeartLoRA(BiLoRA):
    config_cls = HeartLoRAConfig

    def attach(self, backbone: Backbone) -> None:
        super().attach(backbone)
        self.targets = parse_targets(self.config.targets)
        self.heads = [site.num_heads for site in backbone.sites]
        self.mask_epoch = self.config.mask_epoch
        self.mask: list[list[int]] | None = None
        # Optimiser steps taken and the sum of their learning rates, and both as they were
        # when the scores were last read (before that read's step was applied).
        self.trained: tuple[int, float] = (0, 0.0)
        self.read_at: tuple[int, float] | None = None
        self._reset_scores()

    def check_backbone(self, backbone: Backbone) -> None:
        for heads in sorted({s.num_heads for s in backbone.sites}):
            ne = self.masked_per_layer(heads)
            require(ne < heads, f"ne={ne} must be smaller than the number of heads ({heads})"
                    f" of backbone {backbone.name!r}")

    def masked_per_layer(self, heads: int) -> int:
        if self.config.ratio > 0:
            return int(round(self.config.ratio * heads))
        return self.config.ne

    # -- scoring ----------------------------------------------------------------
    def _reset_scores(self) -> None:
        self.raw = {k: [torch.zeros(len(self.targets), h) for h in self.heads] for k in RAW}
        self.steps = [0 for _ in self.heads]

    def _keep(self, key: str, layer: int, t: int, value: torch.Tensor) -> None:
        """Add one step's per-head value (epoch average) or replace it (last step)."""
        if self.config.score_window == "epoch":
            self.raw[key][layer][t] += value.cpu()
        else:
            self.raw[key][layer][t] = value.cpu()

    def _listener(self, layer: int, t: int, heads: int):
        """Forward B and its gradient: the Taylor score (Eq. 5); counts the steps."""
        def listen(weight: torch.Tensor, grad: torch.Tensor) -> None:
            w = weight.float().reshape(heads, -1)
            g = grad.float().reshape(heads, -1)
            self._keep("taylor", layer, t, (w * g).sum(dim=1))
            if self.config.l2_source == "forward":
                self._keep("weight_l2", layer, t, w.norm(dim=1))
                self._keep("grad_l2", layer, t, g.norm(dim=1))
            if t == 0:
                self.read_at = self.trained
                self.steps[layer] = self.steps[layer] + 1 if (
                    self.config.score_window == "epoch") else 1
        return listen

    def _latent_listener(self, layer: int, t: int, heads: int):
        """Latent (trainable) B and its gradient: the weight and gradient L2 norms."""
        def listen(weight: torch.Tensor, grad: torch.Tensor) -> None:
            self._keep("weight_l2", layer, t, weight.float().reshape(heads, -1).norm(dim=1))
            self._keep("grad_l2", layer, t, grad.float().reshape(heads, -1).norm(dim=1))
        return listen

    def listen(self, on: bool) -> None:
        """Start/stop gathering per-head weight and gradient statistics on every step."""
        for site in self.backbone.sites:
            for t, target in enumerate(self.targets):
                delta = self.modules[f"layer{site.layer}.{target}"]
                args = (site.layer, t, site.num_heads)
                delta.listener = self._listener(*args) if on else None
                latent = on and self.config.l2_source == "latent"
                delta.latent_listener = self._latent_listener(*args) if latent else None

    def scores(self, kind: str | None = None) -> list[torch.Tensor]:
        """Per layer, a (targets x heads) tensor of the chosen score (per step if averaged)."""
        kind = kind or self.config.score
        if kind in ("front", "random"):  # selection ignores scores; keep Taylor for records
            kind = "taylor"
        return [score_variant({k: self.raw[k][layer] / max(steps, 1) for k in RAW}, kind)
                for layer, steps in enumerate(self.steps)]

    def compute_mask(self) -> list[list[int]]:
        """The head mask (1 = update kept) per layer from the current scores."""
        if self.read_at is None:  # masked before any read (mask_epoch 0)
            self.read_at = self.trained
        mask = [[1] * h for h in self.heads]
        groups: dict[int, list[int]] = defaultdict(list)
        for layer, heads in enumerate(self.heads):
            groups[heads].append(layer)
        per_head = [s.sum(dim=0) for s in self.scores()] if self.config.score not in (
            "front", "random") else None
        rng = torch.Generator().manual_seed(self.config.mask_seed)
        for heads, layers in sorted(groups.items()):
            ne = self.masked_per_layer(heads)
            units = [layers] if self.config.mode == "global" else [[la] for la in layers]
            for unit in units:
                if self.config.score == "front":
                    chosen = torch.arange(ne)
                elif self.config.score == "random":
                    chosen = torch.randperm(heads, generator=rng)[:ne]
                else:
                    chosen = select_heads(sum(per_head[la] for la in unit), ne)
                for la in unit:
                    for h in chosen.tolist():
                        mask[la][h] = 0
        return mask

    def apply_mask(self, mask: list[list[int]]) -> None:
        """Zero the q/v updates of masked heads (rows of B), layer by layer."""
        self.mask = [list(map(int, m)) for m in mask]
        for site in self.backbone.sites:
            rows = torch.tensor(mask[site.layer], dtype=torch.float32).repeat_interleave(
                site.head_dim)
            for target in self.targets:
                delta: LowRankDelta = self.modules[f"layer{site.layer}.{target}"]
                delta.set_row_mask(rows)

    def nominal_state(self) -> None:
        self.apply_mask(self.compute_mask())

    # -- trainer hooks ----------------------------------------------------------
    def check_schedule(self, epochs: int, warmup_epochs: int) -> None:
        """What training would refuse or never do, checked when a suite loads (before any job
        starts): scores need a warm-up epoch, and the mask must come before the last epoch
        (a run that never masked is failed at its end: :meth:`unfulfilled`)."""
        self._check_scoring(warmup_epochs)
        mask_epoch = getattr(self, "mask_epoch", self.config.mask_epoch)  # set on attach
        mask_epoch = mask_epoch if mask_epoch >= 0 else warmup_epochs
        key = ("mask_epoch" if self.config.mask_epoch >= 0
               else "train.warmup_epochs (mask_epoch = -1 masks after the warm-up)")
        require(not (self.masks_heads() and mask_epoch >= epochs),
                f"{key} = {mask_epoch} is not before train.epochs = {epochs}: no head would ever"
                f" be masked ({self._promise()}); set it below {epochs} (or"
                f" {'ratio' if self.config.ratio > 0 else 'ne'} = 0)")

    def _check_scoring(self, warmup_epochs: int) -> None:
        mask_epoch = getattr(self, "mask_epoch", self.config.mask_epoch)  # set on attach
        mask_epoch = mask_epoch if mask_epoch >= 0 else warmup_epochs
        needs_grad = self.config.score not in ("front", "random")
        require(not (needs_grad and mask_epoch == 0 and self.config.ne > 0),
                f"score {self.config.score!r} needs at least one warm-up epoch before masking"
                f" ne = {self.config.ne} heads; set train.warmup_epochs >= 1 (or ne = 0)")

    def masks_heads(self) -> bool:
        """Whether the config promises to mask some heads (ne > 0, or a ratio > 0)."""
        return self.config.ne > 0 or self.config.ratio > 0

    def _promise(self) -> str:
        return f"ratio = {self.config.ratio}" if self.config.ratio > 0 else f"ne = {self.config.ne}"

    def unfulfilled(self) -> str | None:
        if self.mask is None and any(self.masked_per_layer(h) > 0 for h in set(self.heads)):
            return (f"no head was masked: {self._promise()} heads were to be masked from epoch"
                    f" index mask_epoch = {self.mask_epoch}, but training ended before it")
        return None

    def check_warmup(self, train: dict[str, Any], steps_per_epoch: int) -> None:
        """Refuse a schedule under which the scores would be read on untrained adapters
        (planning calls this with the run's train keys and planned steps per epoch)."""
        from heartbench.schedule import planned_lrs

        c = self.config
        if c.score in ("front", "random") or (c.ne == 0 and c.ratio == 0):
            return  # no mask, or one that ignores the scores
        mask_epoch = c.mask_epoch if c.mask_epoch >= 0 else train["warmup_epochs"]
        before = max(mask_epoch * steps_per_epoch - 1, 0)  # the last read is the last step's
        lrs = planned_lrs(train, steps_per_epoch, before)
        mean = sum(lrs) / len(lrs) if lrs else 0.0
        require(len(lrs) >= MIN_STEPS_BEFORE_SCORING
                and mean >= MIN_LR_FRACTION_BEFORE_SCORING * train["lr"],
                f"heads would be scored after {len(lrs)} optimiser steps at mean lr {mean:.3g},"
                f" under {MIN_LR_FRACTION_BEFORE_SCORING} x train.lr ({train['lr']:g}): the"
                " adapters would not have trained; set train.warmup_per_step = true or more"
                " train.warmup_epochs")

    def on_train_start(self, epochs: int, warmup_epochs: int, steps_per_epoch: int) -> None:
        self._check_scoring(warmup_epochs)
        if self.mask_epoch < 0:
            self.mask_epoch = warmup_epochs
        if self.mask_epoch == 0 and self.mask is None:
            self.apply_mask(self.compute_mask())

    def _scoring_epoch(self, epoch: int) -> bool:
        last_warmup = self.mask_epoch - 1
        return epoch == last_warmup or (self.config.recompute and epoch > last_warmup)

    def on_optimizer_step(self, lr: float) -> None:
        self.trained = (self.trained[0] + 1, self.trained[1] + lr)

    def before_scoring(self) -> dict[str, Any]:
        """Optimiser steps applied before the last weight/gradient read that entered the
        scores (the mask's, when nothing was read), and their mean learning rate (None when
        there was no step)."""
        steps, lr_sum = self.read_at if self.read_at is not None else self.trained
        return {"steps_before_scoring": steps,
                "mean_lr_before_scoring": lr_sum / steps if steps else None}

    def on_epoch_start(self, epoch: int) -> None:
        if self._scoring_epoch(epoch):
            self._reset_scores()
            self.read_at = None
            self.listen(True)

    def on_epoch_end(self, epoch: int) -> None:
        if self._scoring_epoch(epoch):
            self.listen(False)
            self.apply_mask(self.compute_mask())

    # -- records, checkpoints, storage ------------------------------------------
    def record_extras(self) -> dict[str, Any]:
        c = self.config
        return {"heart": {
            "ne": c.ne, "ratio": c.ratio or None, "mode": c.mode, "score": c.score,
            "score_window": c.score_window, "scored_steps": self.steps,
            "mask_epoch": self.mask_epoch, "targets": self.targets,
            "heads_per_layer": self.heads,
            "scores": {k: [s.tolist() for s in self.scores(k)] for k in RAW},
            "mask": self.mask, **self.before_scoring(),
        }}

    def extra_state(self) -> dict[str, Any]:
        return {"raw": self.raw, "steps": self.steps, "mask": self.mask,
                "mask_epoch": self.mask_epoch, "trained": self.trained, "read_at": self.read_at}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.raw, self.steps = state["raw"], state["steps"]
        self.mask_epoch = state["mask_epoch"]
        self.trained = tuple(state.get("trained", (0, 0.0)))
        read_at = state.get("read_at")
        self.read_at = tuple(read_at) if read_at is not None else None
        if state["mask"] is not None:
            self.apply_mask(state["mask"])

    def stored_metadata(self) -> dict[str, str]:
        return {"heart.mask": json.dumps(self.mask)}

    def load_metadata(self, metadata: dict[str, str]) -> None:
        mask = json.loads(metadata.get("heart.mask", "null"))
        if mask is not None:
            self.apply_mask(mask)
