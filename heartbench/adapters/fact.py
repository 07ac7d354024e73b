"""FacT-TT (Jie & Deng 2023): tensor-train factors of all weight increments of a ViT.

Follows the official code (github.com/JieShibo/PETL-ViT, ``FacT/fact_tt.py``: ``set_FacT``,
``fact_forward_attn``, ``fact_forward_mlp``). One pair of factors is shared by the whole
model, ``U``: dim -> r (``FacTu``, PyTorch's default Linear init) and ``V``: r -> dim
(``FacTv``, zero-initialised, so the update is zero at initialisation); every block has its
own small cores (``*_FacTs``, default Linear init, no bias):

* q, k, v and the attention output proj: an r x r core each,
  ``dq(x) = s * V(drop(T_q(U(x))))`` added to the q rows of the fused qkv output (same for
  k, v; proj's input is the attention output before proj);
* fc1 (dim -> 4 dim): an r -> 4r core; its output is read as 4 chunks of r, each mapped
  by ``V`` to one 768-row chunk of fc1's output;
* fc2 (4 dim -> dim): fc2's input is cut into 4 chunks of dim, each mapped by ``U`` to r,
  the 4 r-vectors are concatenated and mapped by an 4r -> r core, then by ``V``;
* dropout 0.1 on the core outputs (``_.dp``), the scale ``s`` multiplies every update.

Each update is a :class:`~heartbench.adapters.base.Delta` on an
:class:`~heartbench.adapters.base.AdaptedLinear` (activation delta, like the official
``qkv += ...``), and ``delta_weight()`` gives the equivalent dense increment, so the
method is mergeable: ``s * V T U`` for q/k/v/proj, the row chunks ``s * V T[c] U`` for fc1
and the column chunks ``s * V T[:, c] U`` for fc2. ``U`` and ``V`` live in one module
registered on the model (``model.fact_tt``); merging folds every increment into qkv, proj,
fc1 and fc2 and removes it.

Backbones: ViT (every block the same width, as the shared U and V need). Swin is not
supported (its stages differ in width); ``check_backbone`` raises a UserError.

Defaults: ``rank=8``, ``scale=1.0``, ``dropout=0.1``. The official per-task settings
(``FacT/configs/tt/<task>.yaml``; rank / scale):
cifar 8/1, caltech101 16/10, dtd 8/0.01, oxford_flowers102 16/1, oxford_iiit_pet 8/1,
svhn 16/100, sun397 8/1, patch_camelyon 8/10, eurosat 8/100, resisc45 8/0.1,
diabetic_retinopathy 8/1, clevr_count 16/1, clevr_dist 4/10, dmlab 16/10, kitti 16/10,
dsprites_loc 16/100, dsprites_ori 16/1, smallnorb_azi 16/100, smallnorb_ele 8/10.

Size on ViT-B/16: ``2 * 768 * r + 12 * (4 + 4 + 4) * r^2`` fp32 values (U, V; per block
4 r x r attention cores, an r x 4r fc1 core and a 4r x r fc2 core). r=4: 8,448
(0.032 MiB; FacT's "8K" tiny version), r=8: 21,504 values = 86,016 B = 0.082 MiB, r=16:
61,440 = 0.234 MiB, r=32: 196,608 = 0.750 MiB. The official per-task ranks above average
39,734 values = 0.152 MiB (FacT's own table: 0.040 M parameters). Table 1 lists FacT-TT at
0.30 MB (about 78,600 values), twice that; the paper says it searched r in {8, 16, 32}
without giving the per-task choice, which a mix of ranks 16 and 32 would explain. We
cannot recover its exact choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters.base import (
    Delta,
    Method,
    MethodConfig,
    qkv_slice,
    register,
    require,
    unwrap_linear,
    wrap_linear,
)
from heartbench.backbones import Backbone
from heartbench.errors import UserError

KINDS = ("attn", "fc1", "fc2")


@dataclass
class FacTTTConfig(MethodConfig):
    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1

    def validate(self) -> None:
        require(self.rank > 0, f"rank must be a positive integer, got {self.rank}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.scale == self.scale, "scale must be a number, got NaN")


class FacTShared(nn.Module):
    """The model-wide factors U (dim -> r) and V (r -> dim, zero-initialised)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.U = nn.Linear(dim, rank, bias=False)
        self.V = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.V.weight)


class FacTDelta(Delta):
    """One weight's increment through the shared U, V and this weight's own core."""

    def __init__(self, shared: FacTShared, kind: str, rank: int, chunks: int, scale: float,
                 dropout: float) -> None:
        super().__init__()
        # A plain attribute, not a submodule: U and V are stored once, by the method.
        self._shared = (shared,)
        self.kind, self.rank, self.chunks, self.scale = kind, rank, chunks, scale
        d_in = rank * chunks if kind == "fc2" else rank
        d_out = rank * chunks if kind == "fc1" else rank
        self.core = nn.Linear(d_in, d_out, bias=False)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def shared(self) -> FacTShared:
        return self._shared[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        U, V = self.shared.U, self.shared.V
        if self.kind == "attn":
            return V(self.drop(self.core(U(x)))) * self.scale
        if self.kind == "fc1":
            h = self.drop(self.core(U(x))).unflatten(-1, (self.chunks, self.rank))
            return V(h).flatten(-2) * self.scale
        h = U(x.unflatten(-1, (self.chunks, -1))).flatten(-2)
        return V(self.drop(self.core(h))) * self.scale

    def delta_weight(self) -> torch.Tensor:
        u, v, t = self.shared.U.weight, self.shared.V.weight, self.core.weight
        r, k = self.rank, self.chunks
        if self.kind == "attn":
            return self.scale * (v @ t @ u)
        if self.kind == "fc1":  # row chunk c: V T[c*r:(c+1)*r, :] U
            return self.scale * torch.einsum("dr,crs,se->cde", v, t.view(k, r, r), u).flatten(0, 1)
        # fc2, column chunk c: V T[:, c*r:(c+1)*r] U
        return self.scale * torch.einsum("dr,rcs,se->dce", v, t.view(r, k, r), u).flatten(1, 2)


@register("fact_tt")
class FacTTT(Method):
    """FacT-TT on q, k, v, proj, fc1 and fc2 of every block."""

    config_cls = FacTTTConfig
    mergeable = True

    def check_backbone(self, backbone: Backbone) -> None:
        dims = {site.dim for site in backbone.sites}
        if backbone.arch != "vit" or len(dims) != 1:
            raise UserError(f"method {self.name!r} needs a ViT whose blocks all have the same"
                            f" width (shared U and V); {backbone.name!r} ({backbone.arch}) has"
                            f" widths {sorted(dims)}")
        dim = dims.pop()
        for site in backbone.sites:
            mlp = getattr(site.block, "mlp", None)
            fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
            if fc1 is None or fc2 is None or fc1.out_features % dim or fc2.out_features != dim:
                raise UserError(f"method {self.name!r}: block {site.layer} of {backbone.name!r}"
                                f" has no timm Mlp whose hidden width is a multiple of {dim}")

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        c = self.config
        model = backbone.model
        dim = backbone.sites[0].dim
        device = next(model.parameters()).device
        shared = FacTShared(dim, c.rank).to(device)
        model.add_module("fact_tt", shared)
        self.modules["shared"] = shared

        def add(parent: nn.Module, attr: str, name: str, kind: str, chunks: int,
                rows: tuple[int, int] | None = None) -> None:
            linear = wrap_linear(parent, attr)
            delta = FacTDelta(shared, kind, c.rank, chunks, c.scale, c.dropout).to(device)
            start, stop = rows if rows is not None else (0, linear.out_features)
            linear.add(f"{self.name}_{name.split('.')[-1]}", delta, start, stop)
            self.modules[name] = delta

        for site in backbone.sites:
            i, mlp = site.layer, site.block.mlp
            for target in ("q", "k", "v"):
                add(site.attn, "qkv", f"layer{i}.{target}", "attn", 1,
                    qkv_slice(target, dim))
            add(site.attn, "proj", f"layer{i}.proj", "attn", 1)
            chunks = mlp.fc1.out_features // dim
            add(mlp, "fc1", f"layer{i}.fc1", "fc1", chunks)
            add(mlp, "fc2", f"layer{i}.fc2", "fc2", chunks)
        self.match_mode()

    def merge(self) -> None:
        assert self.backbone is not None
        for site in self.backbone.sites:
            unwrap_linear(site.attn, "qkv")
            unwrap_linear(site.attn, "proj")
            unwrap_linear(site.block.mlp, "fc1")
            unwrap_linear(site.block.mlp, "fc2")
        del self.backbone.model.fact_tt
        self.modules = {}
