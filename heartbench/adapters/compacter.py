"""Compacter (Karimi Mahabadi et al. 2021): bottleneck adapters with Kronecker-sum weights.

Each adapter is ``up(act(down(h)))`` added to a sub-layer output ``h`` (sequential, with
its own residual), where ``down`` and ``up`` are parameterised hypercomplex multiplication
(PHM) layers::

    W = sum_{i=1..n} A_i (x) B_i,     B_i = s_i t_i^T   (rank ``rank``),

``A_i`` (n x n) shared by *all* PHM layers of the model (``shared_phm_rule``), ``B_i``
((d_in / n) x (d_out / n)) per layer, low-rank factorised (``factorized_phm_W``). This is
the form of Hugging Face ``adapters``' ``CompacterConfig`` (``methods/modeling.py``,
``PHMLayer`` / ``init_shared_parameters``, "adapted from rabeehk/compacter"): y = x @ W + b,
``W = kron(A, B).sum(0)``, n = ``phm_dim`` = 4, rank 1, GELU, ``A`` ~ N(0, 1e-4)
(``phm_init_range``), ``s``/``t`` xavier-normal, bias zero.

Placement (``placement``): ``"houlsby"`` (default; "Compacter") puts one adapter after the
attention sub-layer and one after the MLP of every block; ``"pfeiffer"`` ("Compacter++")
only the one after the MLP. Forward hooks on ``block.attn`` / ``block.mlp``; the adapters
are registered as ``block.attn.compacter`` / ``block.mlp.compacter``, the shared ``A`` as
``model.compacter_rule``.

Initialisation: as in the reference, the update is *not* exactly zero at initialisation:
the tiny shared ``A`` makes every PHM weight about 1e-4 of its ``B``, so the adapters start
as a near-identity (tested: the logits move by far less than 1e-4). Zeroing ``up`` instead
would stall training (the gradients of ``A`` and of ``B_up`` would both be scaled by the
other, one of them zero).

Size on ViT-B/16 (dim 768, hidden h, n = 4, rank 1): a PHM layer d_in -> d_out holds
n x (d_in / n + d_out / n) values (+ d_out with bias); an adapter 2 x 4 x (192 + h / 4).
Defaults (``houlsby``, ``hidden=32``, no bias): 24 adapters x 1,600 + 64 (shared A) =
38,464 fp32 values = 153,856 B = 0.147 MiB; Table 1 lists Compacter at 0.15 MB. The
row's hyper-parameters are not given; like Adapter-P and AdaptFormer (0.56 MB = exactly
the bias-free count) the Size column appears to count weights only, and bias-free
Houlsby-placed Compacter with hidden 32 to 64 is the configuration that lands on 0.15
(hidden 48: 0.150 MiB; Compacter++ or any variant with biases does not: ``pfeiffer``
hidden 32 is 0.073 MiB, ``houlsby`` hidden 32 with biases 0.220 MiB). ``bias=True`` gives
the reference's biased PHM layers.

Not mergeable (non-linear adapters in the residual stream).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters.adapter import (
    ACTIVATIONS,
    check_activation,
    device_of,
    mlp_blocks,
    sequential_hook,
)
from heartbench.adapters.base import Method, MethodConfig, register, require
from heartbench.backbones import Backbone
from heartbench.errors import UserError

PLACEMENTS = ("houlsby", "pfeiffer")


@dataclass
class CompacterConfig(MethodConfig):
    hidden: int = 32
    phm_dim: int = 4
    rank: int = 1
    placement: str = "houlsby"
    activation: str = "gelu"
    bias: bool = False
    init_range: float = 1e-4  # std of the shared A_i

    def validate(self) -> None:
        require(self.phm_dim > 0, f"phm_dim must be a positive integer, got {self.phm_dim}")
        require(self.hidden > 0 and self.hidden % self.phm_dim == 0,
                f"hidden must be a positive multiple of phm_dim={self.phm_dim},"
                f" got {self.hidden}")
        require(self.rank > 0, f"rank must be a positive integer, got {self.rank}")
        require(self.placement in PLACEMENTS,
                f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        require(self.init_range >= 0, f"init_range must be >= 0, got {self.init_range}")
        check_activation(self.activation)


class SharedRule(nn.Module):
    """The n matrices A_i (n x n) shared by every PHM layer of the model."""

    def __init__(self, n: int, std: float) -> None:
        super().__init__()
        self.rule = nn.Parameter(torch.empty(n, n, n))
        nn.init.normal_(self.rule, mean=0.0, std=std)


class PHMLinear(nn.Module):
    """y = x @ (sum_i A_i (x) s_i t_i^T) + b, a d_in -> d_out layer."""

    def __init__(self, rule: SharedRule, d_in: int, d_out: int, rank: int,
                 bias: bool) -> None:
        super().__init__()
        n = rule.rule.shape[0]
        self._rule = (rule,)  # plain attribute: stored once, by the method
        self.left = nn.Parameter(torch.empty(n, d_in // n, rank))
        self.right = nn.Parameter(torch.empty(n, rank, d_out // n))
        for i in range(n):  # the reference inits each slice xavier-normal
            nn.init.xavier_normal_(self.left.data[i])
            nn.init.xavier_normal_(self.right.data[i])
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def weight(self) -> torch.Tensor:
        """The d_in x d_out matrix: sum_i kron(A_i, B_i)."""
        a, b = self._rule[0].rule, torch.bmm(self.left, self.right)
        n, p, q = b.shape
        # kron(A_i, B_i)[k*p + r, l*q + s] = A_i[k, l] * B_i[r, s]
        return torch.einsum("ikl,irs->krls", a, b).reshape(n * p, n * q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight().to(x.dtype)
        return y + self.bias if self.bias is not None else y


class CompacterAdapter(nn.Module):
    def __init__(self, rule: SharedRule, dim: int, hidden: int, rank: int, bias: bool,
                 activation: str) -> None:
        super().__init__()
        self.down = PHMLinear(rule, dim, hidden, rank, bias)
        self.act = ACTIVATIONS[activation]()
        self.up = PHMLinear(rule, hidden, dim, rank, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


@register("compacter")
class Compacter(Method):
    """PHM bottleneck adapters after attention and MLP (houlsby) or after MLP (pfeiffer)."""

    config_cls = CompacterConfig

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def check_backbone(self, backbone: Backbone) -> None:
        n = self.config.phm_dim
        for block in mlp_blocks(backbone, self.name):
            dim = block.mlp.fc1.in_features
            if dim % n:
                raise UserError(f"method {self.name!r}: width {dim} of {backbone.name!r} is not"
                                f" a multiple of phm_dim={n}")

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        c = self.config
        model = backbone.model
        rule = SharedRule(c.phm_dim, c.init_range).to(device_of(model))
        model.add_module("compacter_rule", rule)
        self.modules["rule"] = rule
        places = ("attn", "mlp") if c.placement == "houlsby" else ("mlp",)
        for site, block in zip(backbone.sites, mlp_blocks(backbone, self.name)):
            dim = block.mlp.fc1.in_features
            for place in places:
                sublayer = getattr(block, place)
                adapter = CompacterAdapter(rule, dim, c.hidden, c.rank, c.bias, c.activation)
                adapter.to(device_of(model))
                sublayer.add_module("compacter", adapter)
                self.handles.append(sublayer.register_forward_hook(
                    functools.partial(sequential_hook, adapter)))
                self.modules[f"layer{site.layer}.{place}"] = adapter
        self.match_mode()
