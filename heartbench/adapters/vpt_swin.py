"""VPT on Swin (timm ``SwinTransformer``), following the official code's Swin variant
(github.com/KMnP/vpt, ``src/models/vit_prompt/swin_transformer.py``, ``LOCATION="prepend"``):

* ``length`` prompt tokens of the first stage's width are prepended after the patch
  embedding (xavier-uniform bound ``sqrt(6 / (3 * patch_area + embed_dim))`` for every
  stage, as the official code); deep: every block gets its own prompts of its stage's width,
  replacing the ones that reach it (stage 0: block 0 uses the inserted prompts, blocks 1..
  ``deep_prompt_embeddings_0``; later stages: every block).
* In a block, the prompts share norm1 with the patches and are prepended to *every* window:
  each window attends over ``length + window_area`` tokens with zero relative-position bias
  and zero shift mask for the prompt rows and columns; the prompts' outputs are averaged
  over the windows. The residual, drop-path, norm2 and MLP act on the prompt and patch
  tokens alike (one sequence, as the official ``x = torch.cat((prompt_emb, x), dim=1)``).
* Patch merging: the prompts are repeated four times along the channels (the official
  ``upsample_prompt``) and go through the merging norm and reduction with the patches.
* The final norm applies to the prompts too, and the average pool of the head runs over
  patches *and* prompts (the official ``avgpool`` of the whole sequence).

Deviation: the official code expands the prompts over windows window-major
(``prompt_emb.unsqueeze(0).expand(num_windows, ...)``) while its windows are batch-major, so
with more than one image per batch a window's prompts and the averaged prompt outputs come
from other images of the batch; here each image's windows get that image's prompts (the two
agree for one image per batch, which the tests check against a port of the official
forward).

Mechanics: the prompts in flight live in a :class:`SwinPromptState` attached to the model
(reset by a pre-hook on every forward); hooks on the patch embedding, the merging layers,
the final norm and the head's pool move them along; every block's ``forward`` is replaced by
:func:`prompted_block_forward` (a ``functools.partial``, so deep copies stay consistent).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class SwinPromptState(nn.Module):
    """The prompt tokens flowing through one forward pass (B, length, C); no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: torch.Tensor | None = None


class SwinPrompts(nn.Module):
    """One block's (or the inserted) prompts, with the prompt dropout."""

    def __init__(self, length: int, dim: int, bound: float, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(length, dim))
        nn.init.uniform_(self.tokens, -bound, bound)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def length(self) -> int:
        return self.tokens.shape[0]

    def forward(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        return self.drop(self.tokens.to(dtype).expand(batch, -1, -1))


def swin_blocks(model: nn.Module) -> list[tuple[int, int, nn.Module]]:
    """(stage, index in stage, block) for every Swin block, in order."""
    return [(s, i, block) for s, stage in enumerate(model.layers)
            for i, block in enumerate(stage.blocks)]


def attach_swin_prompts(model: nn.Module, length: int, dropout: float, deep: bool
                        ) -> tuple[dict[str, nn.Module], list[Any]]:
    """Insert prompts into a timm Swin ``model``; returns (modules by name, hook handles)."""
    patch = model.patch_embed.proj.kernel_size
    in_chans = model.patch_embed.proj.in_channels
    embed_dim = model.layers[0].blocks[0].norm1.normalized_shape[0]
    bound = math.sqrt(6.0 / float(in_chans * patch[0] * patch[1] + embed_dim))
    device = next(model.parameters()).device
    state = SwinPromptState()
    model.add_module("vpt_state", state)
    modules: dict[str, nn.Module] = {}
    handles: list[Any] = [model.register_forward_pre_hook(functools.partial(_reset, state))]
    for j, (_, _, block) in enumerate(swin_blocks(model)):
        own = None
        if j == 0 or deep:
            dim = block.norm1.normalized_shape[0]
            own = SwinPrompts(length, dim, bound, dropout).to(device)
            block.add_module("vpt", own)
            modules[f"layer{j}"] = own
        block.forward = functools.partial(prompted_block_forward, block, state, own)
    for stage in model.layers:
        if not isinstance(stage.downsample, nn.Identity):
            handles.append(stage.downsample.register_forward_hook(
                functools.partial(_merge_prompts, state)))
    handles.append(model.norm.register_forward_hook(functools.partial(_norm_prompts, state)))
    handles.append(model.head.global_pool.register_forward_hook(
        functools.partial(_pool_with_prompts, state)))
    return modules, handles


# -- hooks ----------------------------------------------------------------------
def _reset(state: SwinPromptState, module: nn.Module, args: tuple) -> None:
    state.tokens = None


def _merge_prompts(state: SwinPromptState, merging: nn.Module, args: tuple, out: Any) -> None:
    """Official ``upsample_prompt``: the prompts four times along C, then norm + reduction."""
    p = state.tokens
    state.tokens = merging.reduction(merging.norm(torch.cat([p, p, p, p], dim=-1)))


def _norm_prompts(state: SwinPromptState, norm: nn.Module, args: tuple, out: Any) -> None:
    state.tokens = norm.forward(state.tokens)  # not norm(): that would re-enter this hook


def _pool_with_prompts(state: SwinPromptState, pool: nn.Module, args: tuple,
                       out: torch.Tensor) -> torch.Tensor:
    """Average over the patches and the prompts (the pool saw only the patches)."""
    x = args[0]  # (B, H, W, C) after the final norm
    patches = x.shape[1] * x.shape[2]
    prompts = state.tokens
    total = prompts.sum(dim=1).reshape(out.shape) + out * patches
    return total / (patches + prompts.shape[1])


# -- the prompted block -----------------------------------------------------------
def prompted_block_forward(block: nn.Module, state: SwinPromptState,
                           own: SwinPrompts | None, x: torch.Tensor) -> torch.Tensor:
    """A timm SwinTransformerBlock on (B, H, W, C) patches plus the prompts in ``state``."""
    B, H, W, C = x.shape
    if own is not None:  # inserted (first block) or replaced (deep)
        state.tokens = own(B, x.dtype)
    prompts = state.tokens
    length = prompts.shape[1]
    shortcut = torch.cat([prompts, x.reshape(B, -1, C)], dim=1)
    normed = block.norm1(shortcut)
    p_out, x_out = _prompted_attn(block, normed[:, :length], normed[:, length:].reshape(
        B, H, W, C))
    seq = shortcut + block.drop_path1(torch.cat([p_out, x_out.reshape(B, -1, C)], dim=1))
    seq = seq + block.drop_path2(block.mlp(block.norm2(seq)))
    state.tokens = seq[:, :length]
    return seq[:, length:].reshape(B, H, W, C)


def _prompted_attn(block: nn.Module, prompts: torch.Tensor, x: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's ``_attn`` (shift, pad, windows) with the prompts prepended to every window."""
    from timm.models.swin_transformer import window_partition, window_reverse

    B, H, W, C = x.shape
    ws = block.window_size
    shift = any(block.shift_size)
    shifted = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]),
                         dims=(1, 2)) if shift else x
    pad_h, pad_w = (ws[0] - H % ws[0]) % ws[0], (ws[1] - W % ws[1]) % ws[1]
    shifted = F.pad(shifted, (0, 0, 0, pad_w, 0, pad_h))
    _, Hp, Wp, _ = shifted.shape
    windows = window_partition(shifted, ws).view(-1, block.window_area, C)  # b-major
    num_win = windows.shape[0] // B
    mask = block.get_attn_mask(shifted) if getattr(block, "dynamic_mask", False) \
        else block.attn_mask
    out = _window_attention(block.attn, prompts.repeat_interleave(num_win, dim=0), windows,
                            mask)
    length = prompts.shape[1]
    p_out = out[:, :length].reshape(B, num_win, length, C).mean(dim=1)
    x_win = out[:, length:].reshape(-1, ws[0], ws[1], C)
    shifted = window_reverse(x_win, ws, Hp, Wp)[:, :H, :W, :].contiguous()
    x_out = torch.roll(shifted, shifts=block.shift_size, dims=(1, 2)) if shift else shifted
    return p_out, x_out


def _window_attention(attn: nn.Module, prompts: torch.Tensor, windows: torch.Tensor,
                      mask: torch.Tensor | None) -> torch.Tensor:
    """WindowAttention over [prompts, window]; zero bias and mask on the prompt rows/cols."""
    seq = torch.cat([prompts, windows], dim=1)
    B_, N, C = seq.shape
    length = prompts.shape[1]
    qkv = attn.qkv(seq).reshape(B_, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = F.pad(attn._get_rel_pos_bias(), (length, 0, length, 0))  # (1, heads, N, N)
    if mask is not None:
        num_win = mask.shape[0]
        mask = F.pad(mask, (length, 0, length, 0)).to(bias.dtype)
        bias = (bias.unsqueeze(1) + mask.view(1, num_win, 1, N, N)).expand(
            B_ // num_win, -1, -1, -1, -1).reshape(B_, attn.num_heads, N, N)
    scores = (q * attn.scale) @ k.transpose(-2, -1) + bias
    out = attn.attn_drop(scores.softmax(dim=-1)) @ v
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(B_, N, -1)))
