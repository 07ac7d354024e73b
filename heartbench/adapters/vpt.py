"""VPT (Jia et al. 2022): learnable prompt tokens in the input sequence of a frozen ViT.

Follows the official code (github.com/KMnP/vpt, ``src/models/vit_prompt/vit.py``,
``PromptedTransformer``), with its defaults (``LOCATION="prepend"``, ``INITIATION="random"``,
``PROJECT=-1``: no projection):

* ``vpt_shallow``: ``length`` prompt tokens are inserted once, after the embeddings
  (patch embedding + cls token + position embedding; prompts get no position embedding),
  between the cls token and the patch tokens: ``[cls, P, patches]``.
* ``vpt_deep``: the same at the first block, and before every later block ``i`` the
  ``length`` prompt outputs of block ``i - 1`` are *replaced* by block ``i``'s own prompts
  (``forward_deep_prompt``): depth x length prompts in all.
* Initialisation: ``uniform(-v, v)`` with ``v = sqrt(6 / (3 * patch_h * patch_w + dim))``
  (xavier-uniform as in the official code); dropout ``dropout`` on the prompts (official
  default ``PROMPT.DROPOUT = 0.0``).
* Training mode: ``PromptedTransformer.train()`` of the official code puts the encoder and
  the embeddings in eval mode while training (only the prompt dropout trains), so the
  backbone's drop-path and dropout are off for VPT even when the suite sets
  ``drop_path_rate``. ``encoder_eval=True`` (default) does the same here (a forward
  pre-hook on the model turns every backbone module but the prompts to eval mode whenever
  the model is in training mode); ``False`` trains with the backbone's drop-path.
* The prompts leave the sequence after the final norm (a forward hook on ``model.norm``
  cuts them out), so timm's pooling sees the same tokens as without VPT; with timm's
  default "token" pooling this is exactly VPT's ``x[:, 0]`` after the encoder norm.

Mechanics: each block's prompt tensor lives in a :class:`PromptTokens` module registered as
a child of that block (``blocks.<i>.vpt``), so the trainer's checkpoints and ``.to(device)``
see it; forward pre-hooks on the blocks do the insertion/replacement. The hooks are
``functools.partial`` objects of module-level functions, so a deep copy of an attached
model stays consistent.

Backbones: ViT (timm ``VisionTransformer``: ``blocks``, ``norm``, ``num_prefix_tokens``) and
Swin (timm ``SwinTransformer``: the official Swin variant, which prepends the prompts to
every window; :mod:`heartbench.adapters.vpt_swin`).

Not mergeable (prompts change the sequence, not a weight).

Size on ViT-B/16 (dim 768, 12 blocks): shallow ``length * 768``, deep ``12 * length * 768``
fp32 values. Defaults (length 10): shallow 7,680 values = 30,720 B = 0.029 MiB; deep
92,160 values = 368,640 B = 0.352 MiB. Table 1 lists VPT-Shallow 0.24 MB and VPT-Deep
2.03 MB: these are VPT's per-task searched prompt lengths (grid {1, 5, 10, 50, 100, 200}),
averaged over the 19 tasks. In MiB they correspond to an average of about 82 tokens
(shallow: 0.24 * 2^20 / 4 / 768 = 81.9) and about 58 tokens per layer (deep:
2.03 * 2^20 / 4 / (12 * 768) = 57.7). To reproduce the row, set ``length`` per task in the
suite; the default 10 is only a neutral starting point.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from heartbench.adapters.base import Method, MethodConfig, register, require
from heartbench.adapters.full import VPTSolver, check_solver
from heartbench.adapters.linear import SOLVER_ADDED
from heartbench.backbones import Backbone
from heartbench.errors import UserError


@dataclass
class VPTConfig(MethodConfig):
    """Prompts and VPT's prompt solver (KMnP/vpt ``configs/base-prompt.yaml``: SGD, momentum
    0.9, cosine, ``WARMUP_EPOCH: 10``; ``tune_vtab.py`` ``get_lrwd_range("prompt")``: base lr
    in {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05} x weight decay in {0.01, 0.001, 0.0001,
    0}, lr scaled by batch / 256). ``optimizer="adamw"``: the trainer's AdamW (Table 9)."""

    length: int = 10  # prompt tokens (per layer for vpt_deep)
    dropout: float = 0.0
    encoder_eval: bool = True  # official PromptedTransformer.train(): no drop-path
    optimizer: str = "sgd"
    lr: float = 0.25  # VPT's base lr, scaled by batch_size / 256
    weight_decay: float = 0.0001  # base-prompt.yaml
    momentum: float = 0.9
    # Records stored before the keys trained the encoder in train mode, with AdamW.
    legacy: ClassVar[dict[str, Any]] = {"encoder_eval": False, "optimizer": "adamw"}
    added: ClassVar[dict[str, Any]] = SOLVER_ADDED

    def validate(self) -> None:
        require(self.length > 0, f"length must be a positive integer, got {self.length}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check_solver(self)


class PromptTokens(nn.Module):
    """The prompts one block receives; ``insert`` for the first block, else replace."""

    def __init__(self, length: int, dim: int, bound: float, prefix: int, insert: bool,
                 dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(length, dim))
        nn.init.uniform_(self.tokens, -bound, bound)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.prefix, self.insert = prefix, insert

    @property
    def length(self) -> int:
        return self.tokens.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with these prompts after its prefix tokens (inserted, or replacing)."""
        prompts = self.drop(self.tokens.to(x.dtype).expand(x.shape[0], -1, -1))
        n = self.prefix
        rest = x[:, n:] if self.insert else x[:, n + self.length:]
        return torch.cat([x[:, :n], prompts, rest], dim=1)


def _prompt_pre_hook(prompts: PromptTokens, module: nn.Module, args: tuple) -> tuple:
    return (prompts(args[0]), *args[1:])


def _encoder_eval_hook(prompts: list[PromptTokens], model: nn.Module, args: tuple) -> None:
    """In training mode, every module but the prompts runs in eval mode (official VPT)."""
    if not model.training:
        return
    keep = {id(m) for p in prompts for m in p.modules()}
    for module in model.modules():
        if module is not model and id(module) not in keep:
            module.training = False


def _drop_prompts_hook(prefix: int, length: int, module: nn.Module, args: tuple,
                       out: torch.Tensor) -> torch.Tensor:
    return torch.cat([out[:, :prefix], out[:, prefix + length:]], dim=1)


class _VPT(VPTSolver, Method):
    deep: bool = False

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def check_backbone(self, backbone: Backbone) -> None:
        model = backbone.model
        needs = (("layers", "patch_embed", "norm", "head") if backbone.arch == "swin" else
                 ("blocks", "norm", "num_prefix_tokens", "patch_embed"))
        if backbone.arch not in ("vit", "swin") or not all(hasattr(model, a) for a in needs):
            raise UserError(f"method {self.name!r} supports timm ViT and Swin backbones only,"
                            f" not {backbone.name!r} ({backbone.arch})")

    def attach(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.backbone = backbone
        if backbone.arch == "swin":
            from heartbench.adapters.vpt_swin import attach_swin_prompts

            c = self.config
            self.modules, handles = attach_swin_prompts(backbone.model, c.length, c.dropout,
                                                        self.deep)
            self.handles += handles
            self._keep_encoder_eval(backbone.model)
            self.match_mode()
            return
        model = backbone.model
        c = self.config
        dim = model.embed_dim
        patch = model.patch_embed.patch_size
        in_chans = model.patch_embed.proj.in_channels
        # xavier-uniform bound of the official code: fan_in 3 * patch area, fan_out dim
        bound = math.sqrt(6.0 / float(in_chans * patch[0] * patch[1] + dim))
        prefix = model.num_prefix_tokens
        device = next(model.parameters()).device
        blocks = list(model.blocks) if self.deep else [model.blocks[0]]
        for i, block in enumerate(blocks):
            prompts = PromptTokens(c.length, dim, bound, prefix, insert=i == 0,
                                   dropout=c.dropout).to(device)
            block.add_module("vpt", prompts)
            self.handles.append(block.register_forward_pre_hook(
                functools.partial(_prompt_pre_hook, prompts)))
            self.modules[f"layer{i}"] = prompts
        self.handles.append(model.norm.register_forward_hook(
            functools.partial(_drop_prompts_hook, prefix, c.length)))
        self._keep_encoder_eval(model)
        self.match_mode()

    def _keep_encoder_eval(self, model: nn.Module) -> None:
        if self.config.encoder_eval:
            prompts = list(self.modules.values())
            self.handles.append(model.register_forward_pre_hook(
                functools.partial(_encoder_eval_hook, prompts)))


@register("vpt_shallow")
class VPTShallow(_VPT):
    """Prompts inserted once, before the first block."""

    config_cls = VPTConfig
    deep = False


@register("vpt_deep")
class VPTDeep(_VPT):
    """Prompts inserted before the first block and replaced before every later block."""

    config_cls = VPTConfig
    deep = True
