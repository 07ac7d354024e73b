"""Packed runs: K compatible runs trained as one batched model in one process.

A PETL sweep is many small runs of one task on one frozen backbone (seeds, scale grids,
``ne`` grids). Packing trains K of them at once: each step concatenates the K runs'
batches, the frozen backbone's modules run once on the whole (K x batch) tensor, and every
module that holds per-run state runs once per run on that run's rows (:class:`Split`).
LoRA-style deltas share even their frozen base matmul (:class:`PackedAdaptedLinear`), and
the runs' equal frozen tensors are one set in memory (:func:`share_frozen`).

Each run keeps everything it has alone: its own model and method objects (built exactly
as ``train.train_phase`` builds them, in the same order, so the global RNG stream is the
same), its own adapter tensors, head, AdamW, cosine schedule, data loader and generator,
RNG stream (:class:`RunRng`, swapped in around every random draw: data loading, dropout,
drop-path, method hooks), Heart-LoRA scores and mask (its own hooks on its own tensors),
checkpoint (the same file and format as an unpacked run's, so either can resume the
other) and record (with ``packed: {"k", "with", "wall_time_s"}``).

Why not ``torch.func.vmap``: the adapters' custom autograd Functions use the old
``forward(ctx, ...)`` form, which vmap rejects; per-run dropout masks from per-run
generators cannot be drawn inside vmap; and Heart-LoRA's gradient hooks need per-run
tensors. Splitting along the batch reuses every method unchanged.

Exactness: rows do not interact in any ViT/Swin op (linear, layer norm, attention per
sample), so each run's losses and gradients are the unpacked run's up to the float
rounding of GEMM kernels that block differently for a larger M (tests/test_pack.py derives
the tolerance). Runs that cannot pack (different backbones or shapes, different frozen
weights, the ``val`` protocol, or a packed forward that does not reproduce each run's own
forward on a probe batch) run one by one as before.

Speed: packing shares per-op overhead and kernel launches, not arithmetic (every activation
after the first per-run module differs per run), so it pays where steps are launch-bound
(small models or batches on a GPU) and not on an arithmetic-bound CPU step: the dated report
docs/reports/2026-11-29-packing.md has the measurements (``python -m heartbench.bench.packing``).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import random
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from heartbench import schedule
from heartbench.adapters.base import AdaptedLinear, Delta, _AddToSlice
from heartbench.results import checkpoint_path
from heartbench.suite import RunSpec

# Train keys that may differ inside a pack: each run has its own optimiser and schedule.
PER_RUN_TRAIN_KEYS = ("lr", "weight_decay", "warmup_lr_init", "min_lr")


class NotPackable(Exception):
    """These runs cannot share one packed model (they run one by one instead)."""


# ---------------------------------------------------------------------------
# Which runs pack together
# ---------------------------------------------------------------------------
def pack_key(spec: RunSpec) -> str | None:
    """Runs with equal keys may pack; None: this run never packs."""
    if spec.eval_protocol == "val":  # a grid search of sequential phases inside one run
        return None
    train = {k: v for k, v in spec.train.items() if k not in PER_RUN_TRAIN_KEYS}
    return json.dumps([spec.benchmark, spec.data_root, spec.task, spec.shots, spec.method,
                       spec.backbone, spec.eval_protocol, train], sort_keys=True, default=str)


def group_packs(specs: list[RunSpec], k: int) -> list[list[RunSpec]]:
    """Packs of up to ``k`` compatible runs, in order of first appearance."""
    groups: dict[Any, list[RunSpec]] = {}
    for i, spec in enumerate(specs):
        key = pack_key(spec) if k > 1 else None
        groups.setdefault(key if key is not None else ("alone", i), []).append(spec)
    return [members[j:j + k] for members in groups.values()
            for j in range(0, len(members), max(k, 1))]


# ---------------------------------------------------------------------------
# Per-run RNG streams
# ---------------------------------------------------------------------------
class RunRng:
    """One run's global RNG states (torch CPU and CUDA, Python, NumPy), swapped in on use."""

    def __init__(self) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.python = random.getstate()
        self.numpy = np.random.get_state()

    @contextlib.contextmanager
    def active(self, everything: bool = True) -> Iterator[None]:
        """Within: the global generators are this run's; after: they are what they were.

        ``everything=False`` swaps torch's generators only (enough for dropout in forward).
        """
        saved = RunRng() if everything else None
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if self.cuda is not None else None
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if everything:
            random.setstate(self.python)
            np.random.set_state(self.numpy)
        try:
            yield
        finally:
            self.torch = torch.get_rng_state()
            torch.set_rng_state(cpu)
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state_all()
                torch.cuda.set_rng_state_all(cuda)
            if saved is not None:
                self.python, self.numpy = random.getstate(), np.random.get_state()
                random.setstate(saved.python)
                np.random.set_state(saved.numpy)

    def state(self, loader: torch.Generator) -> dict[str, Any]:
        """The checkpoint's ``rng`` entry, as ``train_phase`` writes it for a run alone."""
        return {"torch": self.torch, "loader": loader.get_state(), "python": self.python,
                "numpy": self.numpy}

    def load(self, state: dict[str, Any], loader: torch.Generator) -> None:
        self.torch, self.python, self.numpy = state["torch"], state["python"], state["numpy"]
        loader.set_state(state["loader"])


# ---------------------------------------------------------------------------
# The packed module tree
# ---------------------------------------------------------------------------
class PackState:
    """What every packed module needs: the runs' RNG streams and which runs are still on."""

    def __init__(self, rngs: list[RunRng]) -> None:
        self.rngs = rngs
        self.active = list(range(len(rngs)))

    def swapped(self, k: int, training: bool) -> Any:
        return self.rngs[k].active(everything=False) if training else contextlib.nullcontext()


def _chunks(value: Any, n: int, batch: int) -> list[Any]:
    """``value`` cut into ``n`` row blocks if it is a batch-first tensor, else n times itself."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        if batch % n:
            raise NotPackable(f"batch of {batch} rows does not split into {n} runs")
        return list(value.split(batch // n))
    return [value] * n


def _cat(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, tuple):
        return tuple(_cat(list(parts)) for parts in zip(*outputs))
    raise NotPackable(f"a per-run module returned {type(first).__name__}")


class Split(nn.Module):
    """Run k's own module on run k's rows, for each active run; outputs concatenated."""

    def __init__(self, runs: list[nn.Module], state: PackState) -> None:
        super().__init__()
        self.runs = nn.ModuleList(runs)
        self.state = state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        active = self.state.active
        first = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        batch, n = first.shape[0], len(active)
        cut_args = [_chunks(a, n, batch) for a in args]
        cut_kwargs = {key: _chunks(v, n, batch) for key, v in kwargs.items()}
        outputs = []
        for i, k in enumerate(active):
            with self.state.swapped(k, self.training):
                outputs.append(self.runs[k](*(a[i] for a in cut_args),
                                            **{key: v[i] for key, v in cut_kwargs.items()}))
        return _cat(outputs)


class PackedAdaptedLinear(nn.Module):
    """A frozen Linear with per-run activation deltas: one base matmul for all runs.

    Run k's output rows are ``F.linear(x_k, W, b)`` plus its deltas on their slices, as in
    :class:`AdaptedLinear`; the deltas' dropout draws come from run k's stream, delta by
    delta in the unpacked order.
    """

    def __init__(self, runs: list[AdaptedLinear], state: PackState) -> None:
        super().__init__()
        self.base = runs[0].base
        self.runs = nn.ModuleList(runs)
        self.names = list(runs[0].deltas)
        self.slices = dict(runs[0].slices)
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.state.active
        out = F.linear(x, self.base.weight, self.base.bias)
        rows = x.split(x.shape[0] // len(active))
        for name in self.names:
            parts = []
            for i, k in enumerate(active):
                with self.state.swapped(k, self.training):
                    parts.append(self.runs[k].deltas[name](rows[i]))
            out = _AddToSlice.apply(out, self.slices[name], torch.cat(parts))
        return out


def _random(module: nn.Module) -> bool:
    """Whether ``module`` itself draws random numbers in training mode."""
    from timm.layers import DropPath

    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, DropPath):
        return module.drop_prob > 0
    return False


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _per_run(module: nn.Module) -> bool:
    """Whether ``module`` holds anything a run owns: trained tensors, randomness, hooks."""
    return any(p.requires_grad for p in module.parameters()) or any(
        _random(m) or _hooked(m) or isinstance(m, Delta) for m in module.modules())


def _split_here(module: nn.Module) -> bool:
    """Whether ``module`` must run per run as a whole (its forward may use its own state)."""
    return (not module._modules or _hooked(module) or _random(module)
            or isinstance(module, (Delta, AdaptedLinear)) or "forward" in module.__dict__
            or any(p.requires_grad for p in module.parameters(recurse=False))
            or any(_random(c) for c in module.children()))


def _check_same(modules: list[nn.Module], recurse: bool) -> None:
    """Shared modules must hold the same frozen tensors in every run."""
    first = modules[0]
    for other in modules[1:]:
        if type(other) is not type(first) or list(other._modules) != list(first._modules):
            raise NotPackable(f"{type(first).__name__} differs between runs")
        mine = itertools.chain(first.named_parameters(recurse=recurse),
                               first.named_buffers(recurse=recurse))
        theirs = dict(itertools.chain(other.named_parameters(recurse=recurse),
                                      other.named_buffers(recurse=recurse)))
        for name, tensor in mine:
            if name not in theirs or not torch.equal(tensor, theirs[name]):
                raise NotPackable(f"frozen tensor {name} differs between runs")


def share_frozen(models: list[nn.Module]) -> None:
    """Point the other runs' frozen parameters at the first run's where they are equal: one
    backbone in memory, not K (ViT-B: 344 MB each)."""
    first = dict(models[0].named_parameters(remove_duplicate=False))
    for other in models[1:]:
        for name, theirs in list(other.named_parameters(remove_duplicate=False)):
            mine = first.get(name)
            if (mine is None or mine is theirs or mine.requires_grad or theirs.requires_grad
                    or mine.shape != theirs.shape or not torch.equal(mine, theirs)):
                continue
            owner, _, attr = name.rpartition(".")
            other.get_submodule(owner)._parameters[attr] = mine


def pack_modules(modules: list[nn.Module], state: PackState) -> nn.Module:
    """One module tree that runs ``modules`` (the same place in K run models) as a pack."""
    first = modules[0]
    if not _per_run(first):
        _check_same(modules, recurse=True)
        return first
    if _split_here(first):  # each run's own module: nothing shared to check
        if (isinstance(first, AdaptedLinear) and not _hooked(first)
                and not _per_run(first.base)
                and not any(d.on_weight for d in first.deltas.values())
                and all(m.slices == first.slices for m in modules)):
            _check_same([m.base for m in modules], recurse=True)
            return PackedAdaptedLinear(modules, state)
        return Split(modules, state)
    _check_same(modules, recurse=False)
    # A plain container: a shallow copy whose per-run children are packed in turn.
    shell = copy.copy(first)
    shell._modules = {name: None if child is None else
                      pack_modules([m._modules[name] for m in modules], state)
                      for name, child in first._modules.items()}
    return shell


# ---------------------------------------------------------------------------
# Training K runs as one
# ---------------------------------------------------------------------------
class Run:
    """One run of a pack: what ``train_phase`` holds in its locals, for one spec."""

    def __init__(self, spec: RunSpec, ckpt: Path | None) -> None:
        from heartbench import train as tr

        self.spec, self.ckpt = spec, ckpt
        # train_phase's own set-up, so the global RNG stream this run's RunRng captures next
        # is the one the run has alone. Its parts (precision, device, backbone, method,
        # generator, train_loader, eval_loader, optimizer, scheduler, steps, mixer,
        # criterion: train.Phase) become this run's attributes.
        self.__dict__.update(vars(tr.set_up(spec, spec.method_config, "train", "test")))
        self.history: list[dict[str, Any]] = []
        self.rng = RunRng()
        self.outcome: Any = None  # a train_phase result dict, or the run's Diverged

    def restore(self, state: dict[str, Any]) -> None:
        self.backbone.model.load_state_dict(state["model"], strict=False)
        self.method.load_extra_state(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.load(state["rng"], self.generator)
        self.history = state["history"]

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        from heartbench.train import trainable_state

        return {"epoch": epoch, "model": trainable_state(self.backbone, self.method),
                "method": self.method.extra_state(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "history": self.history,
                "rng": self.rng.state(self.generator)}


def _common_start(runs: list[Run]) -> int:
    """Load the runs' checkpoints at their newest common epoch; return the first epoch to run.

    A kill between two runs' checkpoint writes leaves them one epoch apart: the ones ahead
    fall back to their ``.prev`` file (the epoch before). Anything else starts afresh.
    """
    from heartbench.train import load_checkpoint

    states = [load_checkpoint(r.ckpt) if r.ckpt is not None else None for r in runs]
    if any(s is None for s in states):
        return 0
    epoch = min(s["epoch"] for s in states)
    for i, (run, state) in enumerate(zip(runs, states)):
        if state["epoch"] != epoch:
            prev = run.ckpt.with_name(run.ckpt.name + ".prev")
            try:
                state = torch.load(prev, map_location="cpu", weights_only=False)
            except Exception:  # a torn .prev: no common epoch
                return 0
            if state.get("epoch") != epoch:
                return 0
            states[i] = state
    for run, state in zip(runs, states):
        run.restore(state)
    return epoch + 1


def _probe(packed: nn.Module, runs: list[Run], tol: float = 1e-4) -> None:
    """The packed forward must give each run's own forward (eval mode, a random batch)."""
    size = runs[0].backbone.input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(runs[0].device)
    try:
        with torch.no_grad():
            packed.eval()
            out = packed(x.repeat(len(runs), 1, 1, 1)).split(2)
            for run, got in zip(runs, out):
                run.backbone.model.eval()
                want = run.backbone.model(x)
                if got.shape != want.shape or not torch.allclose(got, want, rtol=tol, atol=tol):
                    raise NotPackable("the packed forward differs from a run's own forward")
    except NotPackable:
        raise
    except Exception as err:  # a module that does not split along the batch
        raise NotPackable(f"the packed forward failed ({type(err).__name__}: {err})") from None
    finally:
        packed.train()


def train_pack(specs: list[RunSpec], ckpts: list[Path | None]) -> list[Run]:
    """Train ``specs`` as one pack; each Run's ``outcome`` is its result or its Diverged."""
    from heartbench import train as tr

    runs = [Run(spec, ckpt) for spec, ckpt in zip(specs, ckpts)]
    state = PackState([r.rng for r in runs])
    packed = pack_modules([r.backbone.model for r in runs], state)
    share_frozen([r.backbone.model for r in runs])
    _probe(packed, runs)
    start = _common_start(runs)
    t, device, precision = specs[0].train, runs[0].device, runs[0].precision
    for epoch in range(start, t["epochs"]):
        live = [runs[k] for k in state.active]
        for run in live:
            with run.rng.active():
                schedule.before_epoch(run.scheduler, run.spec.train, epoch, run.steps)
                run.last_lr = run.optimizer.param_groups[0]["lr"]
                run.method.on_epoch_start(epoch)
                run.batches = iter(itertools.islice(run.train_loader, run.steps))
                run.sums = [0.0, 0.0, 0.0]  # loss * n, correct, seen
        packed.train()
        for index in range(runs[0].steps):
            _step(packed, runs, state, (epoch, index), device, precision)
        last = epoch + 1 == t["epochs"]
        evaluating = last or (specs[0].eval_protocol == "best_of_test"
                              and (epoch + 1) % t["eval_every"] == 0)
        live = [runs[k] for k in state.active]
        for run in live:
            with run.rng.active():
                run.method.on_epoch_end(epoch)
            schedule.after_epoch(run.scheduler, run.spec.train, epoch)
            loss_sum, correct, seen = run.sums
            run.history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                                "train_acc": 100.0 * correct / max(seen, 1), "lr": run.last_lr,
                                "eval_acc": None})
        if evaluating:
            for run, acc in zip(live, _evaluate(packed, live, state, device, precision)):
                run.history[-1]["eval_acc"] = acc
        for run in live:
            if run.ckpt is not None and not last:
                tr.save_checkpoint(run.ckpt, run.checkpoint(epoch))
    for run in runs:
        if run.outcome is None:
            evals = [r["eval_acc"] for r in run.history if r["eval_acc"] is not None]
            run.outcome = {"acc": max(evals) if run.spec.eval_protocol == "best_of_test"
                           else evals[-1], "final_acc": evals[-1], "history": run.history,
                           "method": run.method, "backbone": run.backbone,
                           "device": str(device)}
    return runs


def _step(packed: nn.Module, runs: list[Run], state: PackState, at: tuple[int, int],
          device: torch.device, precision: str) -> None:
    """One optimisation step (``at``: epoch, step index) of every active run, on the
    concatenated batches."""
    from heartbench.train import Diverged, autocast

    epoch, index = at
    live = [runs[k] for k in state.active]
    images, labels, targets = [], [], []
    for run in live:
        with run.rng.active():  # augmentations and Mixup draw from the run's own stream
            x, y = next(run.batches)
            x, y = x.to(device), y.to(device)
            target = y
            if run.mixer is not None:
                x, target = run.mixer(x, y)
                y = y[:len(x)]
        images.append(x)
        labels.append(y)
        targets.append(target)
    with autocast(device, precision):
        logits = packed(torch.cat(images)).split([len(y) for y in labels])
        losses = [run.criterion(out.float(), target)
                  for run, out, target in zip(live, logits, targets)]
    total = None
    for k, run, loss in zip(list(state.active), live, losses):
        if not torch.isfinite(loss):  # this run stops here, as it would alone
            run.outcome = Diverged(epoch + 1, f"loss is {loss.item()}", run.history)
            state.active.remove(k)
            continue
        total = loss if total is None else total + loss
    if total is None:
        return
    for run in live:
        run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    for run, out, y, loss in zip(live, logits, labels, losses):
        if run.outcome is not None:
            continue
        run.optimizer.step()
        run.last_lr = run.optimizer.param_groups[0]["lr"]
        run.method.on_optimizer_step(run.last_lr)
        schedule.after_step(run.scheduler, run.spec.train, epoch, index, run.steps)
        run.sums[0] += loss.item() * y.numel()
        run.sums[1] += (out.argmax(-1) == y).sum().item()
        run.sums[2] += y.numel()


@torch.no_grad()
def _evaluate(packed: nn.Module, live: list[Run], state: PackState, device: torch.device,
              precision: str) -> list[float]:
    from heartbench.train import autocast

    packed.eval()
    correct, total = [0] * len(live), [0] * len(live)
    for batches in zip(*(run.eval_loader for run in live), strict=True):
        labels = [y.to(device) for _, y in batches]
        with autocast(device, precision):
            logits = packed(torch.cat([x.to(device) for x, _ in batches]))
        for i, (out, y) in enumerate(zip(logits.split([len(y) for y in labels]), labels)):
            correct[i] += (out.argmax(dim=-1) == y).sum().item()
            total[i] += y.numel()
    return [100.0 * c / max(n, 1) for c, n in zip(correct, total)]


# ---------------------------------------------------------------------------
# Records and dispatch
# ---------------------------------------------------------------------------
def execute_pack(specs: list[RunSpec], results_dir: str | Path, progress: bool = False
                 ) -> list[dict[str, Any]]:
    """Train ``specs`` as one pack and write each run's record; unpackable runs run alone."""
    from heartbench.provenance import peak_rss_bytes, reset_peak_rss
    from heartbench.train import execute, log

    started = time.time()
    reset_peak_rss()
    for spec in specs:
        checkpoint_path(results_dir, spec.suite, spec.run_id).parent.mkdir(parents=True, exist_ok=True)
    if len(specs) < 2:  # e.g. the other runs of its pack are done already (a resume)
        return [execute(spec, results_dir, progress) for spec in specs]
    try:
        if len({pack_key(s) for s in specs}) != 1 or pack_key(specs[0]) is None:
            raise NotPackable("the runs differ in task, method, backbone or schedule")
        log(f"pack of {len(specs)}: {', '.join(s.run_id for s in specs)}")
        runs = train_pack(specs, [checkpoint_path(results_dir, s.suite, s.run_id) for s in specs])
    except NotPackable as why:
        log(f"not packing {', '.join(s.run_id for s in specs)}: {why}; running them one by one")
        return [execute(spec, results_dir, progress) for spec in specs]
    wall, peak = time.time() - started, peak_rss_bytes()  # of the whole pack
    packed = {"k": len(specs), "with": [s.run_id for s in specs], "wall_time_s": round(wall, 3)}
    records = []
    for run in runs:
        def phase(*_: Any, outcome: Any = run.outcome) -> dict[str, Any]:
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        # The run's share of the pack's time: records' times add up to the machine's time.
        extra = {"packed": packed, "wall_time_s": round(wall / len(specs), 3),
                 "peak_rss_bytes": peak}
        records.append(execute(run.spec, results_dir, progress, phase=phase, extra=extra))
    return records


def run_pack(shard: Any, group: list[RunSpec], results_dir: Path, force: bool,
             progress: bool) -> list[dict[str, Any]]:
    """``RunShard``'s work for one pack: claim its runs, train the unfinished ones as one.

    Outcomes come in ``group``'s order, as ``RunShard._one`` gives them run by run.
    """
    from heartbench.runs import Claim, is_done, is_requeue_error

    outcomes: dict[str, dict[str, Any]] = {}
    todo: list[RunSpec] = []
    with contextlib.ExitStack() as claims:
        for spec in group:
            outcome = {"run_id": spec.run_id, "task": spec.task, "label": spec.label}
            claim_file = results_dir / spec.suite / f"{spec.run_id}.claim"
            if not force and is_done(results_dir, spec):
                outcomes[spec.run_id] = {**outcome, "status": "skipped"}
            elif not claims.enter_context(Claim(claim_file, shard.claim_max_age_s)).held:
                outcomes[spec.run_id] = {**outcome, "status": "claimed"}
            elif not force and is_done(results_dir, spec):  # finished meanwhile
                outcomes[spec.run_id] = {**outcome, "status": "skipped"}
            else:
                todo.append(spec)
        try:
            records = execute_pack(todo, results_dir, progress) if todo else []
        except Exception as err:  # a crash must not cost other packs; checkpoints stay
            if is_requeue_error(err):
                raise
            traceback.print_exc()
            records = [{"status": "failed", "crash": f"crashed ({type(err).__name__}: {err});"
                        " see the job's log"}] * len(todo)
    for spec, record in zip(todo, records):
        error = record.get("error") or {}
        reason = record.get("crash") or (
            f"epoch {error.get('epoch')}: {error.get('reason')}" if error else None)
        outcomes[spec.run_id] = {"run_id": spec.run_id, "task": spec.task, "label": spec.label,
                                 "status": record["status"], "reason": reason}
    return [outcomes[spec.run_id] for spec in group]


def consecutive_packs(specs: list[RunSpec], k: int) -> list[list[RunSpec]]:
    """Runs of a job cut into packs: consecutive compatible runs, up to ``k`` each.

    ``launch.submit`` lays each pack of :func:`group_packs` out side by side in a job's
    runs, so this finds the same packs again (and any order works: runs just pack less).
    """
    packs: list[list[RunSpec]] = []
    for spec in specs:
        key = pack_key(spec) if k > 1 else None
        last = packs[-1] if packs else None
        if (last is not None and key is not None and len(last) < k
                and pack_key(last[0]) == key):
            last.append(spec)
        else:
            packs.append([spec])
    return packs
