"""``python -m heartbench bench``: speed and memory of every method against its physical limit.

What one run measures (one process; training cases are built once and their timed steps
interleaved, rep by rep, in a rotating order; every number is a median):

* **Training step** (forward + backward + AdamW step, the trainer's loss) and **peak memory**
  of every registered method on one backbone and batch, and of each method's **limit**: the
  same frozen backbone where every site the method adapts carries only a trainable scalar
  gate, so the backward pass reaches exactly the modules the method needs and the adapter's
  own arithmetic costs (almost) nothing. Gates are *additive* scalars (``out + g``, or
  ``out[..., slice] += g``): one add forward, one sum backward, nothing saved for backward,
  i.e. the cheapest thing that makes autograd reach a site. Limits per method:

  - lora, bilora, heart_lora, fourierft, mora (every :class:`QKVMethod`): the target slices
    of every site's fused qkv output (q and v; the whole qkv for ``targets="qkv"``);
  - adaptformer, adapter: every block's MLP output; compacter (Houlsby): attention and MLP
    outputs; fact_tt: the outputs of qkv, proj, fc1 and fc2; ssf: every op SSF follows;
  - vpt_shallow: the input of the first block; vpt_deep: the input of every block;
  - full, bitfit (they train backbone tensors down to the patch embedding): the patch
    embedding's output, i.e. the frozen backbone with its gradient reaching the earliest
    adapted module. Weight gradients and AdamW moments of the trained tensors are the
    method's own cost: full cannot meet a gate-defined limit (by design);
  - linear (head only): the frozen backbone and the head, no gate (= the method itself);
  - any other method: the patch embedding (generic; says so in the report).

  ``ref:frozen->patch`` (the frozen backbone with its gradient reaching the patch
  embedding) is always measured: it is the reference of the PEFT numbers quoted in the
  issue (whole-qkv PEFT LoRA ~0.93x of it, PEFT FourierFT ~1.30x on ViT-B, batch 8, 2 threads).
  Peak memory is the largest number of bytes held by live tensors during a step (the
  model's parameters and buffers, optimiser state, gradients and activations): on CUDA
  ``max_memory_allocated`` above the allocation before the step plus the case's resident
  tensors; on the CPU the same from the profiler's allocation events.
* The same step with **Hugging Face PEFT**'s LoRA (r=8, alpha=8, dropout 0.1) and FourierFT
  (``n_frequency`` = ours, scaling 300) on the whole fused qkv (``target_modules=["qkv"]``),
  reported as heartbench / PEFT for our lora/fourierft with ``targets="qkv"`` (like for
  like) and with the default ``"qv"``.
* **Inference** (eval, no grad) with the adapter merged (``Method.mergeable``) / the plain
  backbone; unmerged for the others (marked).
* **Responsiveness scoring** (Heart-LoRA): the listeners' cost per step (timed inside the
  listeners, and as the paired step-time difference), ``compute_mask`` + ``apply_mask``,
  as a fraction of one training epoch of the paper's protocol (15 steps of batch 64,
  extrapolated linearly in the batch from the measured step).
* ``tables`` rebuild time (the command's ``main`` in-process on results/ or the fixture
  records) and ``run --dry-run`` planning time of a 19-task x 16-config grid.
* **Data loading** (VTAB-1K loader on synthetic data in the VTAB layout, resized to the
  backbone's input) in images/s, against the training throughput.
* An **estimate of the GPU time** of the full VTAB-1K suite per method from the measured
  step times (see :func:`suite_estimate` for the assumptions).

Outputs ``<out>/<name>.json`` and ``<out>/<name>.md``. Arithmetic helpers (medians, ratios,
the interleaving schedule, extrapolations) are plain functions, unit-tested without torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from heartbench.errors import UserError, one_of

QUICK_BACKBONE = "vit_mini"
DEFAULT_BACKBONE = "vit_base_patch16_224"
NUM_CLASSES = 100
# The paper's protocol (Table 9): batch 64, 1,000 training images -> 15 steps (drop_last).
PROTOCOL_BATCH = 64
PROTOCOL_STEPS_PER_EPOCH = 15
PROTOCOL_EPOCHS = 100
# Test-set sizes of VTAB-1K, the paper's Table 8.
VTAB1K_TEST_SIZES = {
    "cifar": 10000, "caltech101": 6084, "dtd": 1880, "oxford_flowers102": 6149,
    "oxford_iiit_pet": 3669, "svhn": 26032, "sun397": 21750, "patch_camelyon": 32768,
    "eurosat": 5400, "resisc45": 6300, "diabetic_retinopathy": 42670, "clevr_count": 15000,
    "clevr_dist": 15000, "dmlab": 22735, "kitti": 711, "dsprites_loc": 73728,
    "dsprites_ori": 73728, "smallnorb_azi": 12150, "smallnorb_ele": 12150,
}
# Assumed sustained throughput of one modern GPU (H100-class, bf16 autocast, eager PyTorch,
# ViT-B at batch 64) on the counted matmul/attention FLOPs: ~20 % of the H100's dense bf16
# peak. No GPU was available to measure it; --gpu-tflops changes it.
DEFAULT_GPU_TFLOPS = 200.0

# Targets of the issue: (key, what, comparison, bound).
STEP_TARGETS = {"lora": 1.05, "bilora": 1.05, "heart_lora": 1.05, "mora": 1.10,
                "fourierft": 1.15}
MEMORY_TARGET = 1.10
PEFT_TARGETS = {"lora": 1.00, "fourierft": 0.80}
MERGE_TARGET = 0.98
SCORING_TARGET = 0.01
TABLES_TARGET_S = 10.0
PLANNING_TARGET_S = 1.0

# Fields every report has (the tests check them).
REPORT_KEYS = ("schema", "meta", "cases", "methods", "skipped", "peft", "inference", "scoring",
               "tables", "planning", "data", "suite_estimate", "targets")
META_KEYS = ("machine", "cpu", "device", "threads", "torch", "timm", "peft", "python",
             "backbone", "batch", "reps", "steps", "date", "load_avg", "elapsed_s", "quick")
CASE_KEYS = ("kind", "method", "limit", "config", "step_s", "step_s_reps", "cpu_s", "images_per_s",
             "peak_bytes", "resident_bytes", "gflops", "trainable_params")
METHOD_KEYS = ("limit", "limit_description", "step_s", "step_ratio", "cpu_ratio", "peak_bytes",
               "memory_ratio", "mergeable", "inference_ratio", "merged")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"small backbone ({QUICK_BACKBONE}), few steps: under 2 minutes")
    parser.add_argument("--backbone", default=None,
                        help=f"timm model or preset (default {DEFAULT_BACKBONE}, built without"
                             f" weights; {QUICK_BACKBONE} with --quick)")
    parser.add_argument("--batch", type=int, default=None,
                        help="training batch size (default 8; 16 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--reps", type=int, default=None,
                        help="interleaved repetitions per case (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per case and repetition (default 1; 2 with --quick)")
    parser.add_argument("--out", type=Path, default=Path("bench"),
                        help="output folder (default bench/)")
    parser.add_argument("--name", default=None,
                        help="output file stem (default: quick, vitb for ViT-B, else the backbone)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated registry names (default: every registered method)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--no-peft", action="store_true", help="skip the PEFT comparison")
    parser.add_argument("--gpu-tflops", type=float, default=DEFAULT_GPU_TFLOPS,
                        help="assumed sustained GPU TFLOP/s for the suite estimate"
                             f" (default {DEFAULT_GPU_TFLOPS:g})")
    parser.add_argument("--profile", default=None, metavar="CASE",
                        help="also write a torch.profiler op table of one step of CASE")


# ---------------------------------------------------------------------------
# Arithmetic (pure; unit-tested)
# ---------------------------------------------------------------------------
def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None if there are none."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def paired_ratio(num: Sequence[float | None], den: Sequence[float | None]) -> float | None:
    """Median over repetitions of num[r] / den[r].

    Cases are timed in the same repetition close together, so a per-repetition ratio
    cancels slow drifts in machine load that a ratio of medians would keep.
    """
    return median(ratio(a, b) for a, b in zip(num, den))


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` rotated left by k (k may exceed the length)."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def schedule(groups: Sequence[Sequence[str]], reps: int) -> list[list[str]]:
    """The order cases run in, per repetition.

    A group is a limit and the cases compared with it: they stay adjacent, so their ratio
    compares neighbours in time. Groups, and the cases inside each group, rotate by one
    position per repetition, so no case always runs first (warm caches) or last.
    """
    order = []
    for r in range(reps):
        order.append([c for g in rotate(list(groups), r) for c in rotate(list(g), r)])
    return order


def peak_from_events(deltas: Iterable[int]) -> int:
    """Peak of the running sum of allocation deltas (bytes; frees negative), at least 0."""
    current = peak = 0
    for d in deltas:
        current += d
        peak = max(peak, current)
    return peak


def extrapolate_step(step_s: float, batch: int, to_batch: int = PROTOCOL_BATCH) -> float:
    """Step time at ``to_batch`` assuming time linear in the batch (compute-bound steps)."""
    return step_s * to_batch / batch


def scoring_fraction(listener_s_per_step: float, mask_s: float, step_s_at_protocol: float,
                     steps_per_epoch: int = PROTOCOL_STEPS_PER_EPOCH) -> float:
    """Extra time of a scoring epoch (listeners on every step, then the mask) / one epoch."""
    epoch = steps_per_epoch * step_s_at_protocol
    return (steps_per_epoch * listener_s_per_step + mask_s) / epoch


def estimate_cost_s(step_s: float, cases: int, reps: int, steps: int, warmup: int = 1,
                    profiled: int = 2, inference_methods: int = 0) -> float:
    """Rough wall time of a bench run from one step's time (printed before starting).

    Each training case: ``warmup`` steps, one profiled step (memory and FLOPs; the profiler
    roughly doubles it) and ``reps * steps`` timed ones; inference: about a third of a step
    per forward, method and plain, ``reps`` times.
    """
    training = cases * (warmup + profiled + reps * steps) * step_s
    inference = inference_methods * 2 * (reps + 1) * step_s / 3
    return training + inference


def suite_gpu_hours(runs: int, step_gpu_s: float, eval_gpu_s: float,
                    epochs: int = PROTOCOL_EPOCHS,
                    steps_per_epoch: int = PROTOCOL_STEPS_PER_EPOCH) -> float:
    """GPU hours of ``runs`` runs: epochs x steps of training plus one test evaluation each.

    ``eval_gpu_s`` is the test evaluation of one run, averaged over the runs' tasks.
    """
    return runs * (epochs * steps_per_epoch * step_gpu_s + eval_gpu_s) / 3600.0


def check_target(key: str, what: str, value: float | None, op: str, bound: float
                 ) -> dict[str, Any]:
    """One target row: met is None when the value could not be measured."""
    met = None if value is None else (value <= bound if op == "<=" else value >= bound)
    return {"key": key, "what": what, "value": value, "target": f"{op} {bound:g}", "met": met}


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------
@dataclass
class LimitSpec:
    """Where a method's limit puts its gates."""

    key: str
    description: str


def limit_spec(method: Any) -> LimitSpec:
    """The limit of an attached method (see the module docstring)."""
    from heartbench.adapters.base import QKVMethod, parse_targets
    from heartbench.adapters.full import BackboneTensors

    name = method.name
    if isinstance(method, QKVMethod):
        targets = parse_targets(method.config.targets)
        return LimitSpec(f"qkv[{','.join(targets)}]",
                         f"gates on the {'+'.join(targets)} slice(s) of every qkv output")
    if name == "linear":
        return LimitSpec("head", "frozen backbone, head only (no gate: equals linear probing)")
    if isinstance(method, BackboneTensors):
        return LimitSpec("patch", "gate on the patch embedding output (gradient to the first"
                                  " trained tensor)")
    if name in ("adaptformer", "adapter"):
        return LimitSpec("mlp", "gate on every block's MLP output")
    if name == "compacter":
        if getattr(method.config, "placement", "houlsby") == "houlsby":
            return LimitSpec("attn+mlp", "gates on every block's attention and MLP outputs")
        return LimitSpec("mlp", "gate on every block's MLP output")
    if name == "fact_tt":
        return LimitSpec("linears", "gates on the qkv, proj, fc1 and fc2 outputs of every block")
    if name == "ssf":
        return LimitSpec("ssf_ops", "gates on every op SSF follows (Linear, LayerNorm, patch"
                                    " embedding)")
    if name == "vpt_shallow":
        return LimitSpec("block0_in", "gate on the first block's input")
    if name == "vpt_deep":
        return LimitSpec("blocks_in", "gate on every block's input")
    return LimitSpec("patch", "generic limit (no rule for this method): gate on the patch"
                              " embedding output")


REFERENCE_LIMIT = "patch"


def install_gates(backbone: Any, key: str) -> list[Any]:
    """Put the gates of limit ``key`` on ``backbone``; return the gate parameters."""
    import functools

    import torch
    from torch import nn

    from heartbench.adapters.base import qkv_slice

    device = next(backbone.model.parameters()).device
    gates: list[nn.Parameter] = []

    def new_gate() -> nn.Parameter:
        gate = nn.Parameter(torch.zeros((), device=device))
        gates.append(gate)
        return gate

    def out_hook(gate: nn.Parameter, rows: tuple[int, int] | None, module: Any, args: Any,
                 out: torch.Tensor) -> torch.Tensor:
        if rows is None:
            return out + gate
        return _slice_gate().apply(out, gate, rows)

    def pre_hook(gate: nn.Parameter, module: Any, args: tuple) -> tuple:
        return (args[0] + gate, *args[1:])

    def on_output(module: Any, rows: tuple[int, int] | None = None) -> None:
        module.register_forward_hook(functools.partial(out_hook, new_gate(), rows))

    def on_input(module: Any) -> None:
        module.register_forward_pre_hook(functools.partial(pre_hook, new_gate()))

    sites = backbone.sites
    if key.startswith("qkv["):
        targets = key[4:-1].split(",")
        for site in sites:
            for target in targets:
                rows = qkv_slice(target, site.dim)
                full = rows == (0, site.base_qkv.out_features)
                on_output(site.attn.qkv, None if full else rows)
    elif key == "head":
        pass
    elif key == "patch":
        on_output(backbone.model.patch_embed)
    elif key == "mlp":
        for site in sites:
            on_output(site.block.mlp)
    elif key == "attn+mlp":
        for site in sites:
            on_output(site.block.attn)
            on_output(site.block.mlp)
    elif key == "linears":
        for site in sites:
            for module in (site.attn.qkv, site.attn.proj, site.block.mlp.fc1, site.block.mlp.fc2):
                on_output(module)
    elif key == "ssf_ops":
        from heartbench.adapters.ssf import ssf_targets

        for _, op in ssf_targets(backbone):
            on_output(op)
    elif key == "block0_in":
        on_input(sites[0].block)
    elif key == "blocks_in":
        for site in sites:
            on_input(site.block)
    else:
        raise ValueError(f"unknown limit {key!r}")
    return gates


_SLICE_GATE: Any = None


def _slice_gate() -> Any:
    """``out[..., rows] += gate`` in place with a pass-through backward (built lazily: torch).

    Autograd's own in-place slice add (CopySlices) would clone the whole qkv gradient in
    backward, a cost that is the gate's, not the method's; this gate costs one add forward
    and one sum backward.
    """
    global _SLICE_GATE
    if _SLICE_GATE is None:
        import torch

        class SliceGate(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, out: Any, gate: Any, rows: tuple[int, int]) -> Any:
                out[..., rows[0]:rows[1]] += gate
                ctx.mark_dirty(out)
                ctx.rows = rows
                return out

            @staticmethod
            def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
                start, stop = ctx.rows
                return grad, grad[..., start:stop].sum(), None

        _SLICE_GATE = SliceGate
    return _SLICE_GATE


def clone_backbone(template: Any) -> Any:
    """A new Backbone whose frozen parameters share storage with ``template``'s.

    Each clone has its own Parameter objects (so a method may switch requires_grad or wrap
    modules freely) and its own head, but not its own 86M frozen values: 30 ViT-B cases fit
    in memory. Values never matter for speed; a method that updates backbone tensors in
    place (full, bitfit) drifts the shared values by a few AdamW steps, harmlessly.
    """
    import copy

    from torch import nn

    from heartbench.backbones import Backbone, find_sites

    head = {id(p) for p in template.head.parameters()}
    memo: dict[int, Any] = {}
    for p in template.model.parameters():
        if id(p) not in head:
            memo[id(p)] = nn.Parameter(p.data, requires_grad=False)
    model = copy.deepcopy(template.model, memo)
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    return Backbone(model=model, name=template.name, arch=template.arch,
                    num_classes=template.num_classes, weights=None,
                    kwargs=dict(template.kwargs), sites=find_sites(model))


def method_overrides(name: str, backbone: Any) -> dict[str, Any]:
    """Config changes that make a default config fit a small backbone.

    FourierFT's default n_frequency (12,288) is LoRA r=8's parameter count per q/v slice
    of ViT-B (16 x 768); the same rule (16 x width) keeps it comparable on any width.
    """
    if name == "fourierft":
        return {"n_frequency": 16 * backbone.sites[0].dim}
    return {}


@dataclass
class Case:
    name: str
    kind: str  # method | variant | limit | peft | reference
    method: str | None
    limit: str
    config: dict[str, Any]
    model: Any = None
    params: list[Any] = field(default_factory=list)
    step: Callable[[], Any] | None = None
    optimizer: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    times: list[float | None] = field(default_factory=list)
    cpu_times: list[float | None] = field(default_factory=list)
    peak_bytes: int | None = None
    resident_bytes: int | None = None
    flops: float | None = None


def make_step(model: Any, params: list[Any], images: Any, labels: Any, device: Any
              ) -> tuple[Callable[[], Any], Any]:
    """The trainer's step (train.py): autocast on CUDA, CE on float logits, AdamW."""
    import torch
    from torch import nn

    from heartbench.train import autocast

    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()

    def step() -> Any:
        with autocast(device):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step, optimizer


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def timed_both(fn: Callable[[], Any], device: Any) -> tuple[float, float | None]:
    """(wall seconds, process CPU seconds over all threads; None on CUDA).

    On a shared CPU the wall time also counts waiting for a core; the CPU time counts only
    work, so its ratios are the steadier check of an adapter's own cost.
    """
    _sync(device)
    cpu = time.process_time()
    start = time.perf_counter()
    fn()
    _sync(device)
    wall = time.perf_counter() - start
    return wall, (time.process_time() - cpu if device.type == "cpu" else None)


def _storages(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None or not hasattr(t, "untyped_storage"):
            continue
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def resident_tensors(case: Case, images: Any, labels: Any) -> list[Any]:
    """What a case holds between steps: weights, buffers, grads, optimiser state, batch."""
    model = case.model
    tensors = [*model.parameters(), *model.buffers(), images, labels]
    tensors += [p for p in case.params]
    tensors += [p.grad for p in case.params if p.grad is not None]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if case.optimizer is not None:
        for state in case.optimizer.state.values():
            tensors += [v for v in state.values() if hasattr(v, "untyped_storage")]
    return tensors


def profile_step(case: Case, images: Any, labels: Any, device: Any) -> None:
    """One step under the memory profiler and the FLOP counter: fills peak, resident, flops."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # Free last step's gradients first (the step's zero_grad would): the profiler does not
    # see frees of blocks allocated before it started, which would inflate the peak.
    case.optimizer.zero_grad(set_to_none=True)
    resident = _storages(resident_tensors(case, images, labels))
    case.resident_bytes = resident
    counter = FlopCounterMode(display=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with counter:
            case.step()
        torch.cuda.synchronize(device)
        case.peak_bytes = resident + torch.cuda.max_memory_allocated(device) - before
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, counter:
            case.step()
        case.peak_bytes = resident + cpu_peak_delta(prof)
    case.flops = float(counter.get_total_flops())


def cpu_peak_delta(prof: Any) -> int:
    """Peak bytes allocated above the start of a profiled region, from its memory events."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    return peak_from_events(e.nbytes() for e in events)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
class Bench:
    """State of one benchmark run (kept on an object so each part stays short)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.quick = bool(args.quick)
        self.backbone_name = args.backbone or (QUICK_BACKBONE if self.quick else DEFAULT_BACKBONE)
        self.batch = args.batch or (16 if self.quick else 8)
        self.reps = args.reps or 3
        self.steps = args.steps or (2 if self.quick else 1)
        for flag, value in (("--batch", self.batch), ("--reps", self.reps),
                            ("--steps", self.steps)):
            if value < 1:
                raise UserError(f"{flag} must be >= 1, got {value}")
        if args.threads is not None:
            if args.threads < 1:
                raise UserError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if args.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        elif args.device in ("cpu", "cuda"):
            if args.device == "cuda" and not torch.cuda.is_available():
                raise UserError("--device cuda: no CUDA device is available")
            self.device = torch.device(args.device)
        else:
            raise one_of("device", args.device, ("auto", "cpu", "cuda"))
        self.name = args.name or ("quick" if self.quick else
                                  "vitb" if self.backbone_name == DEFAULT_BACKBONE else
                                  self.backbone_name.replace("/", "_"))
        self.cases: dict[str, Case] = {}
        self.groups: dict[str, list[str]] = {}
        self.limits: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.started = time.time()
        self.forward_flops_per_image: float | None = None
        self.omp_note = f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"

    def log(self, message: str) -> None:
        print(message, flush=True)

    # -- set-up -----------------------------------------------------------------
    def selected_methods(self) -> list[str]:
        from heartbench.adapters import METHODS

        if not self.args.methods:
            return sorted(METHODS)
        names = [m.strip() for m in self.args.methods.split(",") if m.strip()]
        for name in names:
            if name not in METHODS:
                raise one_of("method", name, METHODS)
        return names

    def build_template(self) -> None:
        import torch

        from heartbench.backbones import build_backbone

        torch.manual_seed(0)
        self.template = build_backbone(self.backbone_name, NUM_CLASSES, drop_path_rate=0.1)
        self.template.model.to(self.device)
        size = self.template.input_size
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(self.batch, 3, size, size, generator=gen).to(self.device)
        self.labels = torch.randint(0, NUM_CLASSES, (self.batch,), generator=gen).to(self.device)

    def add_case(self, case: Case, params: list[Any], model: Any) -> None:
        case.model, case.params = model, params
        model.train()
        case.step, case.optimizer = make_step(model, params, self.images, self.labels,
                                              self.device)
        self.cases[case.name] = case
        self.groups.setdefault(case.limit, [])
        if case.name not in self.groups[case.limit]:
            self.groups[case.limit].append(case.name)

    def add_method_case(self, name: str, label: str, kind: str, config: dict[str, Any]) -> Any:
        import torch

        from heartbench.adapters import create_method

        torch.manual_seed(0)
        backbone = clone_backbone(self.template)
        method = create_method(name, config)
        method.attach(backbone)
        method.nominal_state()  # Heart-LoRA: masked, as in every epoch after the warm-up
        spec = limit_spec(method)
        self.limits.setdefault(spec.key, spec.description)
        case = Case(label, kind, name, spec.key, method.config.to_dict())
        case.extras["method"] = method
        case.extras["trainable"] = method.num_trainable()
        self.add_case(case, method.trainable_parameters() + backbone.head_parameters(),
                      backbone.model)
        return method

    def add_limit_case(self, key: str) -> None:
        name = f"limit:{key}"
        if name in self.cases:
            return
        backbone = clone_backbone(self.template)
        gates = install_gates(backbone, key)
        case = Case(name, "limit", None, key, {})
        case.extras["trainable"] = len(gates)
        self.add_case(case, gates + backbone.head_parameters(), backbone.model)

    def add_peft_case(self, kind: str, n_frequency: int) -> None:
        import warnings

        import torch

        torch.manual_seed(0)
        backbone = clone_backbone(self.template)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from peft import FourierFTConfig, LoraConfig, get_peft_model

            if kind == "lora":
                config = {"r": 8, "lora_alpha": 8, "lora_dropout": 0.1}
                get_peft_model(backbone.model, LoraConfig(target_modules=["qkv"], **config))
            else:
                config = {"n_frequency": n_frequency, "scaling": 300.0, "random_loc_seed": 777}
                get_peft_model(backbone.model, FourierFTConfig(target_modules=["qkv"], **config))
        # PEFT freezes everything but its adapters, our head included: the head trains.
        for p in backbone.head_parameters():
            p.requires_grad_(True)
        params = [p for p in backbone.model.parameters() if p.requires_grad]
        case = Case(f"peft:{kind}[qkv]", "peft", kind, "qkv[qkv]", config)
        case.extras["trainable"] = sum(p.numel() for p in params) - sum(
            p.numel() for p in backbone.head_parameters())
        self.add_case(case, params, backbone.model)

    def build_cases(self, methods: list[str]) -> None:
        from heartbench.errors import UserError as _UserError

        for name in methods:
            overrides = method_overrides(name, self.template)
            try:
                self.add_method_case(name, name, "method", overrides)
            except _UserError as err:
                self.skipped[name] = str(err)
                self.log(f"  skip {name}: {err}")
                continue
            if name in ("lora", "fourierft"):
                self.add_method_case(name, f"{name}[qkv]", "variant",
                                     {**overrides, "targets": "qkv"})
        self.add_limit_case(REFERENCE_LIMIT)
        for key in list(self.groups):
            self.add_limit_case(key)
        if self.args.no_peft:
            self.notes.append("PEFT comparison skipped (--no-peft)")
            return
        try:
            import peft  # noqa: F401
        except ImportError:
            self.notes.append("PEFT is not installed: comparison skipped")
            return
        if "lora" in methods and "lora" in self.cases:
            self.add_peft_case("lora", 0)
        if "fourierft" in methods and "fourierft" in self.cases:
            n = method_overrides("fourierft", self.template)["n_frequency"]
            self.add_peft_case("fourierft", n)

    # -- training steps -----------------------------------------------------------
    def warm_up(self) -> None:
        for case in self.cases.values():
            case.step()
        _sync(self.device)

    def profile_all(self) -> None:
        for name, case in self.cases.items():
            profile_step(case, self.images, self.labels, self.device)
            self.log(f"  {name:<24} peak {case.peak_bytes / 2**20:9.1f} MiB"
                     f"  {case.flops / 1e9:9.1f} GFLOP")

    def time_all(self) -> None:
        order = schedule([self.groups[k] for k in sorted(self.groups)], self.reps)
        for r, names in enumerate(order):
            for name in names:
                case = self.cases[name]
                both = [timed_both(case.step, self.device) for _ in range(self.steps)]
                case.times.append(median(w for w, _ in both))
                case.cpu_times.append(median(c for _, c in both))
            self.log(f"  rep {r + 1}/{self.reps} done ({time.time() - self.started:.0f} s)")

    def case_row(self, case: Case) -> dict[str, Any]:
        step = median(case.times)
        return {"kind": case.kind, "method": case.method, "limit": case.limit,
                "config": case.config, "step_s": step, "step_s_reps": case.times,
                "cpu_s": median(case.cpu_times), "cpu_s_reps": case.cpu_times,
                "images_per_s": ratio(self.batch, step), "peak_bytes": case.peak_bytes,
                "resident_bytes": case.resident_bytes,
                "gflops": None if case.flops is None else case.flops / 1e9,
                "trainable_params": case.extras.get("trainable")}

    def compare(self, name: str, other: str) -> dict[str, Any]:
        a, b = self.cases[name], self.cases[other]
        return {"step_ratio": paired_ratio(a.times, b.times),
                "cpu_ratio": paired_ratio(a.cpu_times, b.cpu_times),
                "memory_ratio": ratio(a.peak_bytes, b.peak_bytes),
                "gflop_ratio": ratio(a.flops, b.flops)}

    # -- inference -----------------------------------------------------------------
    def inference(self, methods: list[str]) -> dict[str, Any]:
        import copy

        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from heartbench.adapters import create_method
        from heartbench.adapters.base import NotMergeable

        plain = self.template.model
        plain.eval()
        images = self.images
        out: dict[str, Any] = {}

        def forward(model: Any) -> Callable[[], Any]:
            def run() -> Any:
                with torch.no_grad(), _autocast(self.device):
                    return model(images)
            return run

        run_plain = forward(plain)
        counter = FlopCounterMode(display=False)
        with counter:
            run_plain()
        self.forward_flops_per_image = counter.get_total_flops() / self.batch
        for name in methods:
            if name in self.skipped:
                continue
            torch.manual_seed(0)
            # A private copy: merging writes into the backbone's weights.
            backbone = copy.deepcopy(self.template)
            method = create_method(name, method_overrides(name, self.template))
            method.attach(backbone)
            method.nominal_state()
            merged = False
            if method.mergeable:
                try:
                    method.merge()
                    merged = True
                except NotMergeable:
                    pass
            backbone.model.eval()
            run_method = forward(backbone.model)
            run_method()
            t_method, t_plain = [], []
            for r in range(self.reps):
                pair = [(t_method, run_method), (t_plain, run_plain)]
                for bucket, fn in rotate(pair, r):
                    bucket.append(median(timed(fn, self.device) for _ in range(self.steps)))
            out[name] = {"merged": merged, "mergeable": bool(method.mergeable),
                         "leftovers": leftovers(backbone.model),
                         "step_s": median(t_method), "plain_s": median(t_plain),
                         "ratio": paired_ratio(t_plain, t_method),  # throughput ratio
                         "images_per_s": ratio(self.batch, median(t_method))}
            del backbone, method
        plain.train()
        return out

    # -- responsiveness scoring ---------------------------------------------------------
    def scoring(self) -> dict[str, Any]:
        import torch

        from heartbench.adapters import create_method

        torch.manual_seed(0)
        backbone = clone_backbone(self.template)
        method = create_method("heart_lora")
        method.attach(backbone)  # unmasked: scoring happens in the last warm-up epoch
        backbone.model.train()
        step, _ = make_step(backbone.model,
                            method.trainable_parameters() + backbone.head_parameters(),
                            self.images, self.labels, self.device)
        listener_time = [0.0]

        def listen(on: bool) -> None:
            method.listen(on)
            if not on:
                return
            for module in method.modules.values():
                inner = module.listener

                def wrapped(w: Any, g: Any, inner: Any = inner) -> None:
                    start = time.perf_counter()
                    inner(w, g)
                    _sync(self.device)
                    listener_time[0] += time.perf_counter() - start
                module.listener = wrapped

        method.on_train_start(PROTOCOL_EPOCHS, 10, PROTOCOL_STEPS_PER_EPOCH)
        method._reset_scores()
        step()
        t_on, t_off, per_step = [], [], []
        for r in range(self.reps):
            for mode in rotate([True, False], r):
                listen(mode)
                before = listener_time[0]
                t = median(timed(step, self.device) for _ in range(self.steps))
                (t_on if mode else t_off).append(t)
                if mode:
                    per_step.append((listener_time[0] - before) / self.steps)
        listen(False)
        mask_times = []
        for _ in range(max(5, self.reps)):
            start = time.perf_counter()
            method.apply_mask(method.compute_mask())
            _sync(self.device)
            mask_times.append(time.perf_counter() - start)
        listener_s = median(per_step) or 0.0
        mask_s = median(mask_times) or 0.0
        step_s = median(t_off)
        step_64 = extrapolate_step(step_s, self.batch)
        paired = median(a - b for a, b in zip(t_on, t_off))
        return {
            "listener_s_per_step": listener_s, "paired_step_diff_s": paired,
            "step_s_listening": median(t_on), "step_s": step_s,
            "compute_and_apply_mask_s": mask_s,
            "step_s_at_batch_64": step_64,
            "epoch_s_at_batch_64": PROTOCOL_STEPS_PER_EPOCH * step_64,
            "fraction_of_epoch": scoring_fraction(listener_s, mask_s, step_64),
            "fraction_of_run": scoring_fraction(listener_s, mask_s, step_64) / PROTOCOL_EPOCHS,
            "note": (f"one scoring epoch = {PROTOCOL_STEPS_PER_EPOCH} steps with listeners +"
                     " compute_mask + apply_mask; epoch = 15 steps of batch 64, step time"
                     f" extrapolated linearly from batch {self.batch}; listener time measured"
                     " inside the listeners (the paired step difference is noisier)"),
        }

    # -- tables, planning, data ------------------------------------------------------------
    def tables(self) -> dict[str, Any]:
        import importlib

        root = Path(__file__).resolve().parent.parent
        try:
            build = importlib.import_module("heartbench.report.build")
            if not hasattr(build, "main") or not hasattr(build, "add_arguments"):
                raise ImportError("no main/add_arguments")
        except ImportError as err:
            return {"first_s": None, "warm_s": None, "records": None,
                    "note": f"skipped: tables command not available ({err})"}
        # The committed fixture records first (same input on every machine), then results/.
        found = [c for c in (root / "tests" / "fixtures" / "records" / "golden", root / "results")
                 if c.is_dir() and any(c.glob("*/*.json"))]
        if not found:
            return {"first_s": None, "warm_s": None, "records": None,
                    "note": "skipped: no records in the test fixtures or results/"}
        out: dict[str, Any] = {}
        for records_dir in found:
            key = "fixture" if "fixtures" in records_dir.parts else "results"
            out[key] = _time_tables(build, records_dir, root)
        main = out.get("fixture") or out["results"]
        return {"first_s": main["first_s"], "warm_s": main["warm_s"], "records": main["records"],
                **out, "note": "the tables command's main in-process (--pdf skip), each call into"
                               " a fresh folder; the first call includes imports"}

    def planning(self) -> dict[str, Any]:
        import contextlib
        import io
        import tempfile

        from heartbench.launch import print_plan, select
        from heartbench.suite import load_suite

        text = (
            "[suite]\nbenchmark = \"vtab1k\"\ndata_root = \"data/vtab-1k\"\ntasks = [\"all\"]\n"
            "seeds = [42]\n\n[backbone]\nname = \"vit_base_patch16_224\"\n\n[[methods]]\n"
            "name = \"lora\"\ngrid = { scale = [0.01, 0.1, 1.0, 10.0], rank = [4, 8, 16, 32] }\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench_plan.toml"
            path.write_text(text, encoding="utf-8")
            load_suite(path)  # warm the imports
            load, plan = [], []
            for _ in range(3):
                start = time.perf_counter()
                suite = load_suite(path)
                load.append(time.perf_counter() - start)
                with contextlib.redirect_stdout(io.StringIO()):
                    print_plan(suite, select(suite.runs, None), 0.0)
                plan.append(time.perf_counter() - start)
        return {"runs": len(suite.runs), "load_suite_s": median(load), "dry_run_s": median(plan),
                "note": "19 tasks x 16 grid points (lora scale x rank); load_suite after a"
                        " warm-up call; dry_run_s adds printing the plan"}

    def data(self) -> dict[str, Any]:
        import tempfile

        import torch
        from torch.utils.data import DataLoader

        from heartbench.data.synth import write_synth
        from heartbench.data.tasks import get_benchmark
        from heartbench.data.transforms import vtab_transform
        from heartbench.data.vtab import VTABDataset

        size = self.template.input_size
        out: dict[str, Any] = {"input_size": size, "batch": PROTOCOL_BATCH, "num_workers": 0}
        with tempfile.TemporaryDirectory() as tmp:
            for source in sorted({32, size}):
                root = Path(tmp) / f"synth{source}"
                write_synth(root, size=source)
                datasets = [VTABDataset(root, info, "train800val200", vtab_transform(size))
                            for info in get_benchmark("synth").values()]
                seen, start = 0, time.perf_counter()
                while seen < 256 or time.perf_counter() - start < 1.0:
                    for ds in datasets:
                        loader = DataLoader(ds, batch_size=PROTOCOL_BATCH, shuffle=True,
                                            num_workers=0, generator=torch.Generator())
                        for images, _ in loader:
                            seen += images.shape[0]
                elapsed = time.perf_counter() - start
                out[f"images_per_s_from_{source}px"] = seen / elapsed
        out["note"] = (f"VTABDataset + vtab_transform({size}) on write_synth JPEGs of 32 px"
                       f" (upscaled) and {size} px, DataLoader num_workers=0 (the default),"
                       " one process; real VTAB images are larger JPEGs than the 32-px ones")
        return out

    # -- the suite estimate -----------------------------------------------------------
    def suite_estimate(self, rows: dict[str, dict[str, Any]], inference: dict[str, Any]
                       ) -> dict[str, Any]:
        ref = self.cases.get(f"limit:{REFERENCE_LIMIT}")
        ref_step = median(ref.times) if ref else None
        if not ref or not ref.flops or not ref_step:
            return {"note": "skipped: no reference step"}
        runs = suite_runs()
        if runs is None:
            return {"note": "skipped: suites/vtab1k.toml could not be read"}
        cpu_tflops = ref.flops / ref_step / 1e12
        speedup = self.args.gpu_tflops / cpu_tflops
        # One forward of the plain backbone per test image (counted in the inference part;
        # about half the reference step's FLOPs if that part did not run).
        forward_flops_per_image = self.forward_flops_per_image or ref.flops / 2.0 / self.batch
        test_images = sum(VTAB1K_TEST_SIZES.values())
        per_method: dict[str, Any] = {}
        for name, row in rows.items():
            n_runs = runs.get(name)
            if n_runs is None or row.get("step_s") is None:
                continue
            step_gpu = extrapolate_step(row["step_s"], self.batch) / speedup
            inf = inference.get(name, {})
            slow = 1.0 / inf["ratio"] if inf.get("ratio") else 1.0
            eval_gpu = (test_images / len(VTAB1K_TEST_SIZES) * forward_flops_per_image * slow
                        / (self.args.gpu_tflops * 1e12))
            per_method[name] = {
                "runs": n_runs, "step_s_gpu_batch64": step_gpu,
                "train_gpu_h": suite_gpu_hours(n_runs, step_gpu, 0.0),
                "eval_gpu_h": suite_gpu_hours(n_runs, 0.0, eval_gpu),
                "gpu_h": suite_gpu_hours(n_runs, step_gpu, eval_gpu),
            }
        return {
            "cpu_tflops_measured": cpu_tflops, "gpu_tflops_assumed": self.args.gpu_tflops,
            "gpu_over_cpu": speedup, "test_images_per_task_set": test_images,
            "methods": per_method,
            "total_gpu_h": sum(m["gpu_h"] for m in per_method.values()),
            "note": ("GPU step = measured CPU step x 64/batch / (GPU/CPU speed ratio); the ratio"
                     " is the assumed GPU TFLOP/s over the CPU's measured TFLOP/s on the"
                     " frozen->patch reference (counted matmul/attention FLOPs). Runs per"
                     " method from suites/vtab1k.toml; 100 epochs x 15 steps of batch 64 per"
                     " run plus one pass over the test set (Table 8 sizes) per run."
                     " No GPU was available: the ratio is an assumption."),
        }

    # -- everything --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import torch

        methods = self.selected_methods()
        self.log(f"heartbench bench: backbone {self.backbone_name}, batch {self.batch},"
                 f" {torch.get_num_threads()} threads, {self.reps} reps x {self.steps} steps,"
                 f" device {self.device}")
        self.build_template()
        # Cost estimate from one no-grad forward: a training step is about 3 forwards.
        self.template.model.eval()
        with torch.no_grad():
            self.template.model(self.images)
            fwd = timed(lambda: self.template.model(self.images), self.device)
        self.template.model.train()
        approx_cases = len(methods) + 2 * ("lora" in methods) + 2 * ("fourierft" in methods) + 10
        estimate = estimate_cost_s(3 * fwd, approx_cases, self.reps, self.steps,
                                   inference_methods=len(methods))
        self.log(f"estimated cost: ~{estimate / 60:.1f} min ({approx_cases} training cases,"
                 f" ~{3 * fwd:.2f} s per step from a {fwd:.2f} s forward)")
        self.log("building cases ...")
        self.build_cases(methods)
        self.log(f"{len(self.cases)} training cases: {', '.join(self.cases)}")
        self.warm_up()
        self.log("memory and FLOPs (one profiled step per case) ...")
        self.profile_all()
        if self.args.profile:
            self.write_profile(self.args.profile)
        self.log("timing (interleaved) ...")
        self.time_all()
        cases = {name: self.case_row(c) for name, c in self.cases.items()}
        rows: dict[str, dict[str, Any]] = {}
        for name, case in self.cases.items():
            if case.kind not in ("method", "variant"):
                continue
            limit = f"limit:{case.limit}"
            cmp = self.compare(name, limit)
            rows[name] = {"limit": limit, "limit_description": self.limits.get(case.limit),
                          "step_s": cases[name]["step_s"], "step_ratio": cmp["step_ratio"],
                          "cpu_ratio": cmp["cpu_ratio"],
                          "peak_bytes": case.peak_bytes, "memory_ratio": cmp["memory_ratio"],
                          "gflop_ratio": cmp["gflop_ratio"],
                          "step_ratio_reps": [ratio(a, b) for a, b in zip(
                              case.times, self.cases[limit].times)],
                          "vs_reference": paired_ratio(case.times,
                                                       self.cases[f"limit:{REFERENCE_LIMIT}"].times),
                          "mergeable": bool(case.extras["method"].mergeable),
                          "inference_ratio": None, "merged": None}
        noise = {}
        if "limit:qkv[q,v]" in self.cases and "limit:qkv[qkv]" in self.cases:
            cmp = self.compare("limit:qkv[qkv]", "limit:qkv[q,v]")
            noise = {"equal_limits_wall": cmp["step_ratio"], "equal_limits_cpu": cmp["cpu_ratio"],
                     "note": "paired ratio of two limits whose cost is the same by construction"}
        peft = self.peft_section()
        # Free the training cases before the inference copies.
        for case in self.cases.values():
            case.model = case.step = case.optimizer = None
            case.params = []
            case.extras.pop("method", None)
        self.log("inference ...")
        inference = self.inference([m for m in methods if m not in self.skipped])
        for name, inf in inference.items():
            if name in rows:
                rows[name]["inference_ratio"] = inf["ratio"]
                rows[name]["merged"] = inf["merged"]
        scoring = None
        if "heart_lora" in methods and "heart_lora" not in self.skipped:
            self.log("responsiveness scoring ...")
            scoring = self.scoring()
        self.log("tables, planning, data loading ...")
        tables = self.tables()
        planning = self.planning()
        data = self.data()
        data["training_images_per_s"] = {n: c["images_per_s"] for n, c in cases.items()}
        report = {
            "schema": 1, "meta": self.meta(), "cases": cases, "methods": rows,
            "limits": self.limits, "skipped": self.skipped, "peft": peft, "noise": noise,
            "inference": inference, "scoring": scoring, "tables": tables,
            "planning": planning, "data": data,
            "suite_estimate": self.suite_estimate(rows, inference), "notes": self.notes,
        }
        report["targets"] = targets(report)
        report["meta"]["elapsed_s"] = time.time() - self.started
        return report

    def peft_section(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ref = f"limit:{REFERENCE_LIMIT}"
        for kind in ("lora", "fourierft"):
            peft_name = f"peft:{kind}[qkv]"
            if peft_name not in self.cases:
                continue
            p = self.cases[peft_name]
            entry = {"peft_step_s": median(p.times), "peft_config": p.config,
                     "peft_vs_reference": paired_ratio(p.times, self.cases[ref].times),
                     "peft_memory_vs_limit": ratio(p.peak_bytes,
                                                   self.cases["limit:qkv[qkv]"].peak_bytes)}
            for ours in (f"{kind}[qkv]", kind):
                if ours in self.cases:
                    c = self.cases[ours]
                    entry[f"ours_{'qkv' if ours.endswith(']') else 'qv'}"] = {
                        "step_ratio": paired_ratio(c.times, p.times),
                        "cpu_ratio": paired_ratio(c.cpu_times, p.cpu_times),
                        "memory_ratio": ratio(c.peak_bytes, p.peak_bytes),
                        "config": c.config}
            out[kind] = entry
        return out or None

    def meta(self) -> dict[str, Any]:
        import timm
        import torch

        try:
            import peft

            peft_version = peft.__version__
        except ImportError:
            peft_version = None
        from heartbench.train import git_commit

        return {
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs"
                       f", {_memory_gib()}",
            "cpu": _cpu_model(),
            "device": (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                       else "cpu"),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "timm": timm.__version__, "peft": peft_version,
            "python": platform.python_version(), "backbone": self.backbone_name,
            "batch": self.batch, "reps": self.reps, "steps": self.steps,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "elapsed_s": None, "quick": self.quick, "git_commit": git_commit(),
            "openmp": self.omp_note,
        }

    def write_profile(self, name: str) -> None:
        from torch.profiler import ProfilerActivity, profile

        if name not in self.cases:
            raise UserError(f"--profile: no case {name!r}; cases: {', '.join(self.cases)}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            self.cases[name].step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        self.args.out.mkdir(parents=True, exist_ok=True)
        safe = name.replace(":", "_").replace("[", "_").replace("]", "").replace(",", "")
        (self.args.out / f"profile_{safe}.txt").write_text(table, encoding="utf-8")


def _time_tables(build: Any, records_dir: Path, root: Path, calls: int = 3) -> dict[str, Any]:
    """Seconds of ``calls`` rebuilds of every table and figure from ``records_dir``."""
    import contextlib
    import io
    import tempfile

    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    times, error = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(calls):
            args = parser.parse_args(["--results-dir", str(records_dir), "--out",
                                      str(Path(tmp) / str(i)), "--pdf", "skip"])
            sink = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(sink):
                code = build.main(args)
            times.append(time.perf_counter() - start)
            if code:
                error = f"tables exited with {code}: {sink.getvalue()[-200:]}"
                break
    n = len(list(records_dir.glob("*/*.json")))
    try:
        where = str(records_dir.relative_to(root))
    except ValueError:
        where = str(records_dir)
    return {"first_s": times[0], "warm_s": median(times[1:]), "records": f"{where} ({n} records)",
            "error": error}


def leftovers(model: Any) -> int:
    """Forward hooks and AdaptedLinear wrappers left in a model: 0 after a clean merge.

    A merged model with none runs exactly the plain backbone's ops, so its inference time
    equals the plain one's by construction and a measured ratio off 1 is noise.
    """
    from heartbench.adapters.base import AdaptedLinear

    count = 0
    for module in model.modules():
        count += len(module._forward_hooks) + len(module._forward_pre_hooks)
        count += isinstance(module, AdaptedLinear)
    return count


def _autocast(device: Any) -> Any:
    from heartbench.train import autocast

    return autocast(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        import psutil

        return f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        return "RAM unknown"


def suite_runs() -> dict[str, int] | None:
    """Runs per method name in suites/vtab1k.toml (grids and per-task values expanded)."""
    from heartbench.suite import load_suite

    path = Path(__file__).resolve().parent.parent / "suites" / "vtab1k.toml"
    try:
        suite = load_suite(path)
    except (UserError, OSError):
        return None
    counts: dict[str, int] = {}
    for run in suite.runs:
        counts[run.method] = counts.get(run.method, 0) + 1
    return counts


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, measured value and whether it is met."""
    rows = report["methods"]
    out = []
    for name, bound in STEP_TARGETS.items():
        if name in rows:
            out.append(check_target(f"step:{name}", f"{name} step / limit",
                                    rows[name]["step_ratio"], "<=", bound))
    for name, row in rows.items():
        if row["limit"] is None:
            continue
        out.append(check_target(f"memory:{name}", f"{name} peak memory / limit",
                                row["memory_ratio"], "<=", MEMORY_TARGET))
    for kind, bound in PEFT_TARGETS.items():
        entry = (report.get("peft") or {}).get(kind)
        if not entry:
            continue
        for variant in ("qkv", "qv"):
            if f"ours_{variant}" in entry:
                out.append(check_target(
                    f"peft:{kind}:{variant}",
                    f"heartbench {kind} (targets={variant}) / PEFT {kind} (whole qkv) step",
                    entry[f"ours_{variant}"]["step_ratio"], "<=", bound))
    for name, inf in (report.get("inference") or {}).items():
        if inf["merged"]:
            out.append(check_target(f"merged:{name}", f"{name} merged inference / plain",
                                    inf["ratio"], ">=", MERGE_TARGET))
    if report.get("scoring"):
        out.append(check_target("scoring", "Heart-LoRA scoring overhead / one epoch",
                                report["scoring"]["fraction_of_epoch"], "<=", SCORING_TARGET))
    out.append(check_target("tables", "tables rebuild (s, first call)",
                            report["tables"].get("first_s"), "<=", TABLES_TARGET_S))
    out.append(check_target("planning", "dry-run planning 19 x 16 (s, load_suite)",
                            report["planning"].get("load_suite_s"), "<=", PLANNING_TARGET_S))
    return out


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------
def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def render_markdown(report: dict[str, Any]) -> str:
    m = report["meta"]
    load = ", ".join(f"{x:.1f}" for x in m["load_avg"] or [])
    lines = [
        f"### heartbench bench: {m['backbone']}, batch {m['batch']}",
        "",
        f"Machine: {m['machine']} ({m['cpu']}); device {m['device']}; {m['threads']} threads;"
        f" {m.get('openmp', '')}; torch {m['torch']}, timm {m['timm']}, peft {m['peft']},"
        f" Python {m['python']}; {m['reps']} interleaved reps x {m['steps']} step(s), medians;"
        f" {m['date']}; load average at start {load}; took {_f(m['elapsed_s'], '{:.0f}')} s.",
        "",
        "Training step (forward + backward + AdamW) and peak memory against each method's limit"
        " (the frozen backbone with a trainable scalar gate at every site the method adapts)."
        " `x limit` is the median over reps of the paired wall-time ratio; `(cpu)` the same in"
        " process CPU time (steadier on a shared machine); `x ref` is against the frozen backbone"
        " whose gradient reaches the patch embedding.",
        "",
        "| method | step ms | x limit | (cpu) | x ref | peak MiB | mem x limit | GFLOP x limit |"
        " inference x plain | limit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in report["methods"].items():
        inf = "–" if row["inference_ratio"] is None else (
            f"{row['inference_ratio']:.3f}" + (" merged" if row["merged"] else " unmerged"))
        lines.append(
            f"| {name} | {_ms(row['step_s'])} | {_f(row['step_ratio'], '{:.3f}')} |"
            f" {_f(row.get('cpu_ratio'), '{:.3f}')} | {_f(row['vs_reference'], '{:.3f}')} |"
            f" {_mib(row['peak_bytes'])} | {_f(row['memory_ratio'], '{:.3f}')} |"
            f" {_f(row['gflop_ratio'], '{:.3f}')} | {inf} | {row['limit']} |")
    lines += ["", "Limits, reference and PEFT cases:", "",
              "| case | step ms | cpu ms | peak MiB | GFLOP | trainable | what |",
              "|---|---:|---:|---:|---:|---:|---|"]
    limits = report.get("limits", {})
    for name, c in report["cases"].items():
        if c["kind"] in ("limit", "peft"):
            what = limits.get(c["limit"], "") if c["kind"] == "limit" else "Hugging Face PEFT"
            lines.append(f"| {name} | {_ms(c['step_s'])} | {_ms(c.get('cpu_s'))} |"
                         f" {_mib(c['peak_bytes'])} | {_f(c['gflops'], '{:.1f}')} |"
                         f" {c['trainable_params']} | {what} |")
    noise = report.get("noise") or {}
    if noise.get("equal_limits_wall") is not None:
        lines += ["", f"Noise floor: two limits of equal cost (qkv[q,v] and qkv[qkv] gates) measure"
                  f" {noise['equal_limits_wall']:.3f} (wall) and"
                  f" {_f(noise.get('equal_limits_cpu'), '{:.3f}')} (cpu) of each other."]
    peft = report.get("peft") or {}
    if peft:
        lines += ["", "Against Hugging Face PEFT on the whole fused qkv (`target_modules=[\"qkv\"]`),"
                  " heartbench / PEFT step time (< 1: heartbench faster); wall (cpu):", "",
                  "| method | ours targets=qkv (like for like) | ours targets=qv (default) |"
                  " PEFT x ref | PEFT mem x limit | PEFT step ms |", "|---|---:|---:|---:|---:|---:|"]
        for kind, e in peft.items():
            cells = []
            for variant in ("qkv", "qv"):
                v = e.get(f"ours_{variant}", {})
                cells.append(f"{_f(v.get('step_ratio'), '{:.3f}')}"
                             f" ({_f(v.get('cpu_ratio'), '{:.3f}')})")
            lines.append(f"| {kind} | {cells[0]} | {cells[1]} |"
                         f" {_f(e['peft_vs_reference'], '{:.3f}')} |"
                         f" {_f(e.get('peft_memory_vs_limit'), '{:.3f}')} | {_ms(e['peft_step_s'])} |")
    inference = report.get("inference") or {}
    if inference:
        clean = [n for n, i in inference.items() if i["merged"] and i.get("leftovers") == 0]
        lines += ["", "Inference (eval, no grad): merged models with no hook or wrapper left run"
                  f" exactly the plain backbone's ops: {', '.join(clean) or 'none'}; their timing"
                  " ratios differ from 1 by noise only."]
    s = report.get("scoring")
    if s:
        lines += ["", f"Responsiveness scoring (Heart-LoRA): listeners"
                  f" {s['listener_s_per_step'] * 1000:.2f} ms/step (paired step difference"
                  f" {_ms(s['paired_step_diff_s'])} ms, noise),"
                  f" compute_mask + apply_mask {s['compute_and_apply_mask_s'] * 1000:.2f} ms;"
                  f" epoch (15 steps of batch 64, extrapolated linearly) {s['epoch_s_at_batch_64']:.1f}"
                  f" s -> {s['fraction_of_epoch'] * 100:.3f} % of an epoch"
                  f" ({s['fraction_of_run'] * 100:.5f} % of a 100-epoch run)."]
    t, p, d = report["tables"], report["planning"], report["data"]
    tables = "; ".join(f"{v['records']}: first {_f(v['first_s'])} s, warm {_f(v['warm_s'])} s"
                       for k, v in t.items() if k in ("fixture", "results") and v)
    lines += ["", f"`tables` rebuild (in-process, --pdf skip): {tables or t.get('note')}."
              f" `run --dry-run` planning of {p.get('runs')} runs (19 tasks x 16 grid points):"
              f" load_suite {_f(p.get('load_suite_s'), '{:.3f}')} s, with the printed plan"
              f" {_f(p.get('dry_run_s'), '{:.3f}')} s."]
    loads = {k: v for k, v in d.items() if k.startswith("images_per_s_from_")}
    train_ips = d.get("training_images_per_s", {})
    shown = {k: v for k, v in train_ips.items() if k in ("lora", f"limit:{REFERENCE_LIMIT}")}
    lines += ["", "Data loading (VTAB-1K loader on synthetic VTAB-layout JPEGs, num_workers=0): "
              + ", ".join(f"{v:.0f} img/s from {k.split('_')[-1]}" for k, v in loads.items())
              + f" images resized to {d.get('input_size')} px; training on this machine: "
              + ", ".join(f"{k} {_f(v, '{:.1f}')} img/s" for k, v in shown.items()) + "."]
    est = report.get("suite_estimate") or {}
    if est.get("methods"):
        lines += ["", f"Estimated GPU time of the full VTAB-1K suite (suites/vtab1k.toml, this"
                  f" backbone) on one GPU sustaining {est['gpu_tflops_assumed']:g} TFLOP/s"
                  f" (assumed; no GPU measured): this CPU did"
                  f" {est['cpu_tflops_measured'] * 1000:.0f} GFLOP/s on the reference step, so"
                  f" GPU/CPU = {est['gpu_over_cpu']:.0f}x.", "",
                  "| method | runs | GPU step ms (batch 64) | GPU img/s | train GPU-h | eval GPU-h |"
                  " GPU-h |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, e in est["methods"].items():
            lines.append(f"| {name} | {e['runs']} | {e['step_s_gpu_batch64'] * 1000:.1f} |"
                         f" {PROTOCOL_BATCH / e['step_s_gpu_batch64']:.0f} |"
                         f" {e['train_gpu_h']:.2f} | {e['eval_gpu_h']:.2f} | {e['gpu_h']:.2f} |")
        lines.append(f"| total | | | | | | {est['total_gpu_h']:.1f} |")
    lines += ["", "Targets:", "", "| target | value | bound | met |", "|---|---:|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['what']} | {_f(t['value'], '{:.3f}')} | {t['target']} | {met} |")
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items())]
    if report.get("notes"):
        lines += ["", "Notes: " + "; ".join(report["notes"])]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path


def main(args: argparse.Namespace) -> int:
    # On a shared CPU, OpenMP threads that spin-wait after a parallel region steal the core
    # from the main thread: small serial ops then stall a whole time slice (~8 ms each,
    # measured). Passive waiting avoids it; it must be set before torch loads OpenMP.
    omp_effective = "torch" not in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    bench = Bench(args)
    bench.omp_note = (f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
                      + ("" if omp_effective else " (torch was already imported: not applied)"))
    report = bench.run()
    json_path, md_path = write_report(report, args.out, bench.name)
    print(render_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    missed = [t for t in report["targets"] if t["met"] is False]
    if missed:
        print(f"{len(missed)} target(s) missed: " + ", ".join(t["key"] for t in missed),
              file=sys.stderr)
    return 0

