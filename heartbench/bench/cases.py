"""The training cases of a run: every method (and its variants), each method's limit, the
reference limit and Hugging Face PEFT, built on clones of one frozen template backbone.

To add a case: one ``add_*_case`` function here, called from :func:`build_cases`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heartbench.bench.limits import REFERENCE_LIMIT, install_gates, limit_spec
from heartbench.bench.settings import NUM_CLASSES, Settings
from heartbench.errors import UserError


@dataclass
class Workload:
    """The frozen template backbone and the one batch every case trains on."""

    template: Any
    images: Any
    labels: Any


def build_workload(settings: Settings) -> Workload:
    import torch

    from heartbench.backbones import build_backbone

    torch.manual_seed(0)
    template = build_backbone(settings.backbone_name, NUM_CLASSES, drop_path_rate=0.1)
    template.model.to(settings.device)
    size = template.input_size
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(settings.batch, 3, size, size, generator=gen).to(settings.device)
    labels = torch.randint(0, NUM_CLASSES, (settings.batch,), generator=gen).to(settings.device)
    return Workload(template, images, labels)


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


@dataclass
class CaseSet:
    """The cases of a run, grouped by limit (a group is timed adjacently)."""

    cases: dict[str, Case] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)  # limit key -> description
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why
    notes: list[str] = field(default_factory=list)

    def add(self, case: Case, params: list[Any], model: Any, work: Workload,
            device: Any) -> None:
        case.model, case.params = model, params
        model.train()
        case.step, case.optimizer = make_step(model, params, work.images, work.labels, device)
        self.cases[case.name] = case
        group = self.groups.setdefault(case.limit, [])
        if case.name not in group:
            group.append(case.name)

    def release(self) -> None:
        """Drop the models, steps and optimisers (keeping the measurements)."""
        for case in self.cases.values():
            case.model = case.step = case.optimizer = None
            case.params = []
            case.extras.pop("method", None)


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


def make_step(model: Any, params: list[Any], images: Any, labels: Any, device: Any,
              precision: str = "fp32") -> tuple[Callable[[], Any], Any]:
    """The trainer's step (train.py): its autocast, CE on float logits, AdamW."""
    import torch
    from torch import nn

    from heartbench.train import autocast

    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()

    def step() -> Any:
        with autocast(device, precision):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step, optimizer


def add_method_case(found: CaseSet, work: Workload, device: Any, name: str, label: str,
                    kind: str, config: dict[str, Any]) -> Any:
    """A registered method with ``config``, in its nominal (trained) state."""
    import torch

    from heartbench.adapters import create_method

    torch.manual_seed(0)
    backbone = clone_backbone(work.template)
    method = create_method(name, config)
    method.attach(backbone)
    method.nominal_state()  # Heart-LoRA: masked, as in every epoch after the warm-up
    spec = limit_spec(method)
    found.limits.setdefault(spec.key, spec.description)
    case = Case(label, kind, name, spec.key, method.config.to_dict())
    case.extras["method"] = method
    case.extras["trainable"] = method.num_trainable()
    found.add(case, method.trainable_parameters() + backbone.head_parameters(),
              backbone.model, work, device)
    return method


def add_limit_case(found: CaseSet, work: Workload, device: Any, key: str) -> None:
    """The frozen backbone with the gates of limit ``key`` (once per key)."""
    name = f"limit:{key}"
    if name in found.cases:
        return
    backbone = clone_backbone(work.template)
    gates = install_gates(backbone, key)
    case = Case(name, "limit", None, key, {})
    case.extras["trainable"] = len(gates)
    found.add(case, gates + backbone.head_parameters(), backbone.model, work, device)


def add_peft_case(found: CaseSet, work: Workload, device: Any, kind: str,
                  n_frequency: int) -> None:
    """Hugging Face PEFT's LoRA or FourierFT on the whole fused qkv."""
    import warnings

    import torch

    torch.manual_seed(0)
    backbone = clone_backbone(work.template)
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
    found.add(case, params, backbone.model, work, device)


def build_cases(settings: Settings, work: Workload) -> CaseSet:
    """Every case of the run: methods (+ whole-qkv variants), limits, reference, PEFT."""
    found = CaseSet()
    device, methods = settings.device, settings.methods
    for name in methods:
        overrides = method_overrides(name, work.template)
        try:
            add_method_case(found, work, device, name, name, "method", overrides)
        except UserError as err:
            found.skipped[name] = str(err)
            settings.log(f"  skip {name}: {err}")
            continue
        if name in ("lora", "fourierft"):
            add_method_case(found, work, device, name, f"{name}[qkv]", "variant",
                            {**overrides, "targets": "qkv"})
    add_limit_case(found, work, device, REFERENCE_LIMIT)
    for key in list(found.groups):
        add_limit_case(found, work, device, key)
    if settings.no_peft:
        found.notes.append("PEFT comparison skipped (--no-peft)")
        return found
    try:
        import peft  # noqa: F401
    except ImportError:
        found.notes.append("PEFT is not installed: comparison skipped")
        return found
    if "lora" in methods and "lora" in found.cases:
        add_peft_case(found, work, device, "lora", 0)
    if "fourierft" in methods and "fourierft" in found.cases:
        n = method_overrides("fourierft", work.template)["n_frequency"]
        add_peft_case(found, work, device, "fourierft", n)
    return found
