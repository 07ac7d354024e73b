"""The training protocol: one run from a RunSpec to a stored record.

Paper defaults (Table 9, protocol.md): AdamW, lr 1e-3 (few-shot 5e-3), weight decay 1e-4 on
every trainable tensor, batch 64 with drop_last, 100 epochs, timm's CosineLRScheduler with
10 warm-up epochs (warmup_lr_init 1e-6, lr_min 1e-5) stepped once per epoch (or per
optimiser step: ``train.warmup_per_step``, heartbench/schedule.py), plain cross-entropy.
Methods get the hooks ``on_train_start``/``on_epoch_start``/``on_epoch_end`` (Heart-LoRA
scores and masks there) and ``on_optimizer_step`` (the lr each step used); the trainer
knows nothing of any method.

Evaluation protocols (named in every record):
- ``last``: train on train800val200, report the final epoch's test accuracy (default);
- ``val``: for each point of the grid train on train800 and evaluate val200, pick the best,
  retrain it on train800val200 and report its test accuracy;
- ``best_of_test``: test every ``eval_every`` epochs and report the maximum (what the
  reference code does; it selects on the test set: for comparison only).

Resume: after every epoch the run's state (trainable tensors, optimiser, scheduler, method
state, RNG states, history) is written atomically to ``<run_id>.<phase>.ckpt``; the
previous checkpoint is kept as ``.prev`` so a torn write falls back one epoch.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from heartbench import provenance, schedule
from heartbench.adapters import create_method, save_adapter
from heartbench.adapters.base import Method
from heartbench.backbones import Backbone, build_backbone
from heartbench.errors import UserError
from heartbench.suite import RunSpec

T = TypeVar("T")
VTAB_SPLITS = {"train": "train800val200", "search_train": "train800", "search_val": "val200",
               "test": "test"}


class RunFailed(Exception):
    """The run trained but is not a result: it is stored as failed, with this reason."""

    def __init__(self, epoch: int, reason: str, history: list[dict[str, Any]] | None = None
                 ) -> None:
        super().__init__(f"epoch {epoch}: {reason}")
        self.epoch, self.reason, self.history = epoch, reason, list(history or [])


class Diverged(RunFailed):
    """The loss, the trained weights or the model's outputs became NaN or infinite."""


def log(message: str) -> None:
    """A line for the job's log (stderr): the trainer never prints to stdout."""
    print(f"[heartbench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_dataset(spec: RunSpec, split: str, image_size: int, train: bool) -> Any:
    """The dataset of one split ('train', 'search_train', 'search_val', 'test')."""
    from heartbench.data import transforms
    from heartbench.data.tasks import resolve_task

    info = resolve_task(spec.benchmark, spec.task)
    if spec.shots is not None:
        from heartbench.data.fewshot import FewShotDataset

        name = {"train": "train", "search_train": "train", "search_val": "val",
                "test": "test"}[split]
        # NOAH's recipe keys (suite.FEWSHOT_RECIPE); records from before them had
        # ColorJitter 0.4 and no erasing, which the fallbacks keep.
        t = spec.train
        transform = (transforms.fewshot_train_transform(
            image_size, color_jitter=t.get("color_jitter", 0.4) or None,
            reprob=t.get("reprob", 0.0)) if train
            else transforms.fewshot_test_transform(image_size))
        return FewShotDataset(spec.data_root, info, name, spec.shots, spec.seed, transform)
    from heartbench.data.vtab import VTABDataset

    transform = transforms.vtab_transform(image_size, normalize=spec.train["normalize"])
    # The VTAB transform is deterministic: the training split (1,000 images, read every
    # epoch) is decoded once per process; val and test (read once per run, up to 73,728
    # images) stream, so host memory does not grow with the test set (data/vtab.py).
    return VTABDataset(spec.data_root, info, VTAB_SPLITS[split], transform,
                       cache=split in ("train", "search_train"))


def make_loader(dataset: Any, spec: RunSpec, train: bool, generator: torch.Generator
                ) -> DataLoader:
    return DataLoader(dataset, batch_size=spec.train["batch_size"], shuffle=train,
                      drop_last=train and len(dataset) >= spec.train["batch_size"],
                      num_workers=spec.train["num_workers"], generator=generator,
                      pin_memory=False, persistent_workers=False)


def build(spec: RunSpec, method_config: dict[str, Any], device: torch.device
          ) -> tuple[Backbone, Method]:
    b = spec.backbone
    backbone = build_backbone(b["name"], spec.num_classes, weights=b["weights"],
                              drop_path_rate=b["drop_path_rate"],
                              pre_logits=b.get("pre_logits", False), **b["kwargs"])
    method = create_method(spec.method, method_config)
    method.attach(backbone)
    backbone.model.to(device)
    return backbone, method


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: write a temp file, keep the last good one as .prev, then rename.

    A failed write (a full disk) removes the temp file and leaves the last good checkpoint;
    a full disk is a one-line error naming the path (torch alone says "iostream error").
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        # Through a Python file object, so a failed write is an OSError with its errno.
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(err, tmp)
        raise
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)
    write_epoch_marker(path, int(state["epoch"]) + 1)


def write_epoch_marker(ckpt: Path, epochs_done: int) -> None:
    """``<ckpt>.epoch``: how many epochs the run has finished, for ``run``'s and ``status``'s
    progress (reading a torch checkpoint there would cost seconds; ``status.epochs_done``
    reads it). Best effort: a failed write never stops training. Removed with the
    checkpoints when the run ends (``_cleanup`` matches ``<run_id>.*ckpt*``)."""
    marker = ckpt.with_name(ckpt.name + ".epoch")
    tmp = marker.with_name(marker.name + ".tmp")
    try:
        tmp.write_text(f"{epochs_done}\n")
        os.replace(tmp, marker)
    except OSError:
        tmp.unlink(missing_ok=True)



def raise_if_disk_full(err: BaseException, path: Path) -> None:
    """Turn a failed write on a full disk into a one-line UserError naming ``path``."""
    import errno
    import shutil

    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        text in str(err) for text in ("No space left", "StorageFull", "code: 28"))
    if not full and not isinstance(err, OSError):  # torch's C++ writer loses the errno
        try:
            full = shutil.disk_usage(path.parent).free < 64 * 2**20
        except OSError:
            full = False
    if full:
        raise UserError(f"no space left on the device writing {path}: free space there and"
                        " rerun the same command to resume (finished records are kept)") from None


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint (falling back to .prev), or None to start afresh."""
    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "epoch" not in state:
                raise ValueError("no epoch in checkpoint")
            log(f"resuming from {candidate.name} after epoch {state['epoch'] + 1}")
            return state
        except Exception as err:  # a torn or foreign file: say so and try the previous one
            log(f"checkpoint {candidate} is unreadable ({type(err).__name__}: {err});"
                " falling back")
    if path.exists() or path.with_name(path.name + ".prev").exists():
        log("no readable checkpoint: starting from scratch")
    return None


def trainable_state(backbone: Backbone, method: Method) -> dict[str, torch.Tensor]:
    names = {id(p) for p in method.trainable_parameters() + backbone.head_parameters()}
    state = {}
    for name, p in backbone.model.named_parameters():
        if id(p) in names:
            state[name] = p.detach().cpu().clone()
    for name, buf in backbone.model.named_buffers():
        state[name] = buf.detach().cpu().clone()
    return state


# ---------------------------------------------------------------------------
# One training phase
# ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             precision: str = "fp32") -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast(device, precision):
            logits = model(images)
        correct += (logits.argmax(dim=-1) == labels).sum().item()
        total += labels.numel()
    return 100.0 * correct / max(total, 1)


def autocast(device: torch.device, precision: str = "fp32") -> Any:
    """bf16 autocast when the suite asks for it (train.precision = "bf16"), else a no-op.

    The reference code (PETL-ViT, NOAH, VPT) trains in fp32, and bf16 keeps 8 significant
    bits: an adapter update under about 2^-8 of the layer's output is lost
    (docs/protocols.md, "Precision"). So bf16 is opt-in, on any device (CPU autocast works too).
    """
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def set_matmul_precision(precision: str) -> None:
    """fp32 matmuls in full fp32 (the default) or, for "tf32", TF32 tensor cores on CUDA."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def make_optimizer(method: Method, params: list[nn.Parameter], train: dict[str, Any]
                   ) -> torch.optim.Optimizer:
    """The method's own optimiser if it has one (Full: VPT's SGD), else AdamW (Table 9)."""
    own = getattr(method, "make_optimizer", None)
    optimizer = own(params, train) if own is not None else None
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=train["lr"], weight_decay=train["weight_decay"])
    return optimizer


@dataclass
class Phase:
    """What one training of a configuration holds, built by :func:`set_up`."""

    precision: str
    device: torch.device
    backbone: Backbone
    method: Method
    generator: torch.Generator  # the training loader's order
    train_loader: DataLoader
    eval_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps: int  # training batches per epoch
    mixer: Any  # few-shot: NOAH's Mixup/CutMix; VTAB: None
    criterion: Callable[..., torch.Tensor]


def set_up(spec: RunSpec, method_config: dict[str, Any], train_split: str,
           eval_split: str) -> Phase:
    """Seed, build and wire one training, in one fixed order: a run alone
    (:func:`train_phase`) and each run of a pack (``heartbench.pack.Run``) draw the same
    random numbers from it, which is what makes a packed run equal to the run alone."""
    from heartbench.data.transforms import batch_recipe
    from heartbench.schedule import make_scheduler

    t = spec.train
    precision = t.get("precision", "fp32")
    seed_everything(spec.seed)
    set_matmul_precision(precision)
    device = resolve_device(t["device"])
    backbone, method = build(spec, method_config, device)
    size = backbone.input_size
    generator = torch.Generator().manual_seed(spec.seed)
    train_loader = make_loader(make_dataset(spec, train_split, size, True), spec, True, generator)
    eval_loader = make_loader(make_dataset(spec, eval_split, size, False), spec, False,
                              torch.Generator())
    params = method.trainable_parameters() + backbone.head_parameters()
    optimizer = make_optimizer(method, params, t)
    steps = len(train_loader) if not t["max_train_batches"] else min(len(train_loader),
                                                                         t["max_train_batches"])
    scheduler = make_scheduler(optimizer, t, steps)
    method.on_train_start(t["epochs"], t["warmup_epochs"], steps)
    mixer, criterion = batch_recipe(t, spec.num_classes)
    return Phase(precision, device, backbone, method, generator, train_loader, eval_loader,
                 optimizer, scheduler, steps, mixer, criterion)


def train_phase(spec: RunSpec, method_config: dict[str, Any], train_split: str,
                eval_split: str, ckpt: Path | None, progress: bool = False
                ) -> dict[str, Any]:
    """Train one configuration; return accuracies, history, method extras and the method."""
    t = spec.train
    p = set_up(spec, method_config, train_split, eval_split)
    precision, device, backbone, method = p.precision, p.device, p.backbone, p.method
    generator, train_loader, eval_loader, steps = p.generator, p.train_loader, p.eval_loader, p.steps
    optimizer, scheduler, mixer, criterion = p.optimizer, p.scheduler, p.mixer, p.criterion
    history: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(ckpt) if ckpt is not None else None
    if state is not None:
        backbone.model.load_state_dict(state["model"], strict=False)
        method.load_extra_state(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["loader"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        history, start = state["history"], state["epoch"] + 1
    bar = _bar(range(start, t["epochs"]), progress, f"{spec.task} {spec.label}")
    for epoch in bar:
        schedule.before_epoch(scheduler, t, epoch, steps)
        method.on_epoch_start(epoch)
        backbone.model.train()
        loss_sum = correct = seen = 0.0
        lr = optimizer.param_groups[0]["lr"]
        for index, (images, labels) in enumerate(itertools.islice(train_loader, steps)):
            images, labels = images.to(device), labels.to(device)
            targets = labels
            if mixer is not None:
                images, targets = mixer(images, labels)
                labels = labels[:len(images)]
            with autocast(device, precision):
                logits = backbone.model(images)
                loss = criterion(logits.float(), targets)
            if not torch.isfinite(loss):
                raise Diverged(epoch + 1, f"loss is {loss.item()}", history)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]  # this step's (per epoch: the epoch's)
            method.on_optimizer_step(lr)
            schedule.after_step(scheduler, t, epoch, index, steps)
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(-1) == labels).sum().item()
            seen += labels.numel()
        method.on_epoch_end(epoch)
        schedule.after_epoch(scheduler, t, epoch)
        row = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
               "train_acc": 100.0 * correct / max(seen, 1), "lr": lr, "eval_acc": None}
        last = epoch + 1 == t["epochs"]
        if last or (spec.eval_protocol == "best_of_test" and (epoch + 1) % t["eval_every"] == 0):
            row["eval_acc"] = evaluate(backbone.model, eval_loader, device, precision)
        history.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.1f}")
        if ckpt is not None and not last:
            save_checkpoint(ckpt, {
                "epoch": epoch, "model": trainable_state(backbone, method),
                "method": method.extra_state(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history,
                "rng": {"torch": torch.get_rng_state(), "loader": generator.get_state(),
                        "python": random.getstate(), "numpy": np.random.get_state()}})
    evals = [r["eval_acc"] for r in history if r["eval_acc"] is not None]
    final = evals[-1]
    reported = max(evals) if spec.eval_protocol == "best_of_test" else final
    return {"acc": reported, "final_acc": final, "history": history, "method": method,
            "backbone": backbone, "device": str(device)}


def _bar(epochs: range, progress: bool, desc: str) -> Any:
    if not progress:
        return epochs
    from tqdm import tqdm

    return tqdm(epochs, desc=desc, unit="epoch", leave=False,
                disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------
# A whole run: protocol, record, adapter file
# ---------------------------------------------------------------------------
def execute(spec: RunSpec, results_dir: str | Path, progress: bool = False,
            phase: Callable[..., dict[str, Any]] | None = None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``spec`` under its eval protocol and write its record; return the record.

    ``phase`` stands in for the final ``train_phase`` and ``extra`` is merged into the
    record last: a packed run (heartbench/pack.py) has trained already and says so.
    """
    from heartbench.results import adapter_facts, checkpoint_path, record_path, write_record

    started = time.time()
    out_dir = record_path(results_dir, spec.suite, spec.run_id).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(results_dir, spec.suite, spec.run_id)
    # One line per execution in the job's log: what ran where, and how often.
    log(f"run {spec.run_id}: training {spec.task} {spec.label} seed {spec.seed} (pid {os.getpid()})")
    record = base_record(spec)
    provenance.reset_peak_rss()
    try:
        config, selection = spec.method_config, None
        if spec.eval_protocol == "val":
            config, selection = select_on_val(spec, out_dir, progress)
        result = (phase or train_phase)(spec, config, "train", "test", ckpt, progress)
        problem = result_problem(result)
        if problem is not None:
            raise RunFailed(spec.train["epochs"], problem, result["history"])
    except RunFailed as err:
        # metrics stays an object (with test_acc null) so that readers accept the record.
        record.update(status="failed", error={"epoch": err.epoch, "reason": err.reason},
                      metrics={"test_acc": None, "val_acc": None, "history": err.history},
                      wall_time_s=round(time.time() - started, 3))
        record.update(extra or {})  # a pack's own time and memory replace this process's
        guarded_write(record_path(results_dir, spec.suite, spec.run_id),
                      lambda: write_record(results_dir, record, overwrite=True))
        _cleanup(out_dir, spec.run_id)
        return record
    method: Method = result["method"]
    adapter_file = out_dir / f"{spec.run_id}.safetensors"
    stored = (guarded_write(adapter_file, lambda: save_adapter(method, adapter_file))
              if spec.keep_adapter else method.stored_bytes())
    record.update(
        status="done", method_config=config,
        # The searched keys' values before the search (run_id hashes them; config has the choice).
        searched_from={k: spec.method_config[k] for k in spec.search if k in spec.method_config},
        metrics={"test_acc": round(result["acc"], 4), "final_test_acc": round(result["final_acc"], 4),
                 "val_acc": selection["best_val_acc"] if selection else None,
                 "selection": selection, "history": result["history"]},
        adapter={"stored_bytes": stored,
                 "head_bytes": sum(p.numel() * p.element_size()
                                   for p in result["backbone"].head_parameters()),
                 "trainable_params": method.num_trainable(),
                 **(adapter_facts(adapter_file) | {"file": adapter_file.name} if spec.keep_adapter
                    else {"file": None, "kept": False})},  # kept false: suite keep_adapter
        device=result["device"], wall_time_s=round(time.time() - started, 3),
        peak_rss_bytes=provenance.peak_rss_bytes(), **method.record_extras())
    record.update(extra or {})
    record_file = record_path(results_dir, spec.suite, spec.run_id)
    guarded_write(record_file, lambda: write_record(results_dir, record, overwrite=True))
    _cleanup(out_dir, spec.run_id)
    return record


@torch.no_grad()
def result_problem(result: dict[str, Any]) -> str | None:
    """Why a finished training is not a result, or None: a trained tensor that is not finite
    after the last step (the loss is checked before each step, not after the last one), the
    model's outputs not finite on a fixed input (weights finite but so large that the
    forward overflows), or a method not in the state its config promises
    (:meth:`Method.unfulfilled`, e.g. a Heart-LoRA mask never applied)."""
    backbone, method = result["backbone"], result["method"]
    trained = {id(p) for p in method.trainable_parameters() + backbone.head_parameters()}
    bad = [name for name, p in backbone.model.named_parameters()
           if id(p) in trained and not bool(torch.isfinite(p).all())]
    if bad:
        return (f"{len(bad)} trained tensor(s) are not finite after the last step ({bad[0]}"
                f"{', ...' if len(bad) > 1 else ''}): the training diverged")
    model = backbone.model
    training = model.training
    model.eval()
    try:
        side = backbone.input_size
        chans = int(getattr(getattr(model, "patch_embed", None), "proj", None).in_channels
                    if hasattr(getattr(model, "patch_embed", None), "proj") else 3)
        device = next(model.parameters()).device
        out = model(torch.zeros((1, chans, side, side), device=device))
    finally:
        model.train(training)
    if not bool(torch.isfinite(out).all()):
        return ("the trained model's outputs are not finite (its weights overflow the forward"
                " pass): the training diverged")
    return method.unfulfilled()


def guarded_write(path: Path, write: Callable[[], T]) -> T:
    """``write()``, which writes ``path`` through ``path.tmp``; on failure no temp file stays
    and a full disk is one line naming ``path``."""
    try:
        return write()
    except Exception as err:  # safetensors and torch raise their own types for I/O errors
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        raise_if_disk_full(err, path)
        raise


def select_on_val(spec: RunSpec, out_dir: Path, progress: bool
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train each grid point on train800, keep the best on val200 (first wins ties)."""
    keys = sorted(spec.search)
    tried = []
    for i, combo in enumerate(itertools.product(*(spec.search[k] for k in keys))):
        config = {**spec.method_config, **dict(zip(keys, combo))}
        ckpt = out_dir / f"{spec.run_id}.search{i}.ckpt"
        result = train_phase(spec, config, "search_train", "search_val", ckpt, progress)
        tried.append({"grid": dict(zip(keys, combo)), "val_acc": round(result["final_acc"], 4)})
    best = max(range(len(tried)), key=lambda j: (tried[j]["val_acc"], -j))
    config = {**spec.method_config, **tried[best]["grid"]}
    return config, {"tried": tried, "best": tried[best]["grid"],
                    "best_val_acc": tried[best]["val_acc"]}


def _cleanup(out_dir: Path, run_id: str) -> None:
    for path in out_dir.glob(f"{run_id}.*ckpt*"):
        path.unlink(missing_ok=True)


def base_record(spec: RunSpec) -> dict[str, Any]:
    return {
        "schema": 1, "run_id": spec.run_id, "status": None, "error": None,
        "suite": spec.suite, "benchmark": spec.benchmark, "task": spec.task,
        "group": spec.group, "shots": spec.shots, "method": spec.method, "label": spec.label,
        "method_config": spec.method_config, "grid": spec.grid, "search": spec.search,
        "backbone": spec.backbone, "train": spec.train, "seed": spec.seed,
        "num_classes": spec.num_classes, "data_root": spec.data_root,
        "eval_protocol": spec.eval_protocol, "metrics": None, "heart": None, "adapter": None,
        "wall_time_s": None, "device": None,
        # CPU float reductions depend on the thread count: rerun_record restores it.
        "threads": torch.get_num_threads(),
        "cpu": provenance.cpu_info(),  # the kernels' instruction set: a re-run elsewhere may differ
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": provenance.versions(), "git_commit": provenance.git_commit(),
        # Data fingerprint and weights sha256: a changed copy reruns (heartbench/content.py).
        "content": spec.content or None,
        # Only plugin methods and suite-declared tasks have these: where they come from.
        **({"plugin": spec.plugin} if spec.plugin else {}),
        **({"custom_task": spec.custom_task} if spec.custom_task else {}),
    }
