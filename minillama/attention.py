"""Causal self-attention with grouped-query heads, padding masks and a KV cache.

Axis names used in shapes: ``b`` batch, ``t`` query positions, ``s`` key positions, ``h`` query
heads, ``g`` key/value heads (groups), ``r`` query heads per group (``h = g r``), ``d`` head
dim, ``c`` model dim.

GQA in the einops path never repeats K and V: the query heads are grouped as ``(g r)`` and each
group attends to its own key/value head through the einsum, so memory stays at ``g`` heads.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import LlamaConfig
from .rope import apply_rope


class KVCache:
    """Keys and values of every layer for incremental decoding.

    Preallocated, one ``(b, g, max_seq_len, d)`` tensor per layer for the keys and one for the
    values, so that decoding a token writes in place instead of concatenating (which would copy the
    whole cache every step). One tensor per layer rather than one for all: a compiled decoding step
    writes into a tensor it was given in place, but a write into a slice of a bigger tensor it
    turns into a copy of the whole of it (9 ms against 0.07 ms per step at batch 64, tiny preset).
    """

    def __init__(self, config: LlamaConfig, batch_size: int, max_seq_len: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        max_seq_len = config.max_seq_len if max_seq_len is None else max_seq_len
        if batch_size < 1:
            raise ValueError(f"KVCache batch_size must be >= 1, got {batch_size}")
        if not 1 <= max_seq_len <= config.max_seq_len:
            raise ValueError(f"KVCache max_seq_len must be in [1, config.max_seq_len={config.max_seq_len}], "
                             f"got {max_seq_len}")
        shape = (batch_size, config.n_kv_heads, max_seq_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.length = 0  # positions filled so far, shared by every layer
        # Static decoding: when set, a (1,) tensor holding the column the next token is written to, and
        # update() returns every column (the caller masks those not written yet). Nothing then depends
        # on a Python number, so a compiled decoding step keeps its shapes from token to token.
        self.write_at: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes the keys and values of every layer occupy."""
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def check(self, batch_size: int, n_new: int) -> None:
        """Raise ``ValueError`` unless ``n_new`` positions of ``batch_size`` rows fit after the cached ones."""
        if batch_size != self.batch_size:
            raise ValueError(f"KV cache was made for batch {self.batch_size}, got batch {batch_size}")
        if self.length + n_new > self.capacity:
            raise ValueError(f"KV cache overflow: capacity max_seq_len={self.capacity}, holds {self.length} "
                             f"positions, cannot add {n_new} more")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v (b, g, t, d)`` after the cached positions of ``layer`` and return all keys and
        values so far, ``(b, g, s, d)`` with ``s = length + t``. Call :meth:`advance` once all
        layers have been updated. With :attr:`write_at` set, ``k, v`` go to that column and all
        ``capacity`` columns come back."""
        if self.write_at is not None:
            self.k[layer].index_copy_(2, self.write_at, k)
            self.v[layer].index_copy_(2, self.write_at, v)
            return self.k[layer], self.v[layer]
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n_new: int) -> None:
        self.length += n_new

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (a boolean mask or indices over the batch) in every layer:
        finished sequences leave the batch, and the next steps cost what the others cost."""
        self.k, self.v = [k[keep] for k in self.k], [v[keep] for v in self.v]

    def repeat_rows(self, n: int) -> None:
        """Repeat every row ``n`` times in place (row ``i`` becomes rows ``i n .. i n + n - 1``): a prompt
        run once serves ``n`` samples."""
        self.k = [k.repeat_interleave(n, dim=0) for k in self.k]
        self.v = [v.repeat_interleave(n, dim=0) for v in self.v]


def build_attention_mask(attention_mask: torch.Tensor | None, t: int, s: int, causal: bool = True,
                         device: torch.device | None = None) -> torch.Tensor | None:
    """Boolean mask of allowed (query, key) pairs, ``(b, 1, t, s)`` or ``(1, 1, t, s)``.

    The queries are the last ``t`` of ``s`` positions, so query ``i`` sees keys ``<= i + s - t``.
    ``attention_mask (b, s)`` marks real tokens with 1 and padding with 0. Every query may always
    see itself: a padding query would otherwise have no key at all and its softmax would be NaN;
    its output is never used. Returns ``None`` when nothing needs masking (a single decoding step
    with no padding).
    """
    if attention_mask is None and (not causal or t == 1):
        return None
    device = attention_mask.device if attention_mask is not None else device
    query_pos = torch.arange(s - t, s, device=device)[:, None]
    key_pos = torch.arange(s, device=device)[None, :]
    allowed = key_pos <= query_pos if causal else torch.ones(t, s, dtype=torch.bool, device=device)
    allowed = allowed[None, None]
    if attention_mask is not None:
        if attention_mask.shape[-1] != s:
            raise ValueError(f"attention_mask must cover all {s} key positions (cache + new), "
                             f"got shape {tuple(attention_mask.shape)}")
        allowed = allowed & attention_mask.bool()[:, None, None, :]
        allowed = allowed | (key_pos == query_pos)[None, None]
    return allowed


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                    causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """Softmax attention written out in einops.

    ``q (b, h, t, d)``, ``k, v (b, g, s, d)`` with ``h % g == 0``; ``mask (b|1, 1, t, s)`` of allowed
    pairs or ``None`` (then plain causal when ``causal`` and ``t > 1``). Returns ``(b, h, t, d)``.
    """
    g = k.shape[1]
    t, s = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if mask is None and causal and t > 1:
        mask = build_attention_mask(None, t, s, device=q.device)
    q = rearrange(q, "b (g r) t d -> b g r t d", g=g)
    scores = torch.einsum("b g r t d, b g s d -> b g r t s", q, k) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.einsum("b g r t s, b g s d -> b g r t d", probs, v)
    return rearrange(out, "b g r t d -> b (g r) t d")


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """Same contract as :func:`eager_attention` (``mask`` carries padding; the causal part is
    implied), through PyTorch's fused kernels (flash,
    memory-efficient, cuDNN or math, chosen by PyTorch). ``enable_gqa`` lets it read grouped K/V
    without repeating them."""
    t, s = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if mask is None:
        # is_causal aligns the mask to the top-left, which is right only when t == s.
        is_causal = causal and t > 1
        if is_causal and t != s:
            mask = build_attention_mask(None, t, s, device=q.device)
            is_causal = False
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                              enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """The Triton FlashAttention-2 kernel (:mod:`minillama.kernels`); no padding masks."""
    if mask is not None:
        raise ValueError("attn_backend='triton' supports causal attention without a padding "
                         "attention_mask; use attn_backend='sdpa' or 'eager' for padded batches")
    from .kernels import flash_attention  # imported lazily: Triton is an optional dependency

    return flash_attention(q, k, v, causal=causal, sm_scale=scale)


Backend = Callable[..., torch.Tensor]
BACKENDS: dict[str, Backend] = {"eager": eager_attention, "sdpa": sdpa_attention, "triton": triton_attention}
ATTN_BACKENDS: tuple[str, ...] = tuple(BACKENDS)


class Attention(nn.Module):
    """Multi-head / grouped-query / multi-query self-attention with RoPE."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wq = nn.Linear(config.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, attend: Backend = sdpa_attention) -> torch.Tensor:
        """``x (b, t, c)``, ``cos, sin (b, t, d)``, ``mask (b|1, 1, t, s)`` or None -> ``(b, t, c)``;
        ``attend`` is one of :data:`BACKENDS`."""
        # Plain view/transpose rather than einops here: this runs per layer and per decoded token,
        # where einops' pattern handling is a measurable share of a tiny model's step time.
        b, t, _ = x.shape
        h, g, d = self.n_heads, self.n_kv_heads, self.head_dim
        q = apply_rope(self.wq(x).view(b, t, h, d), cos, sin).transpose(1, 2)  # b h t d
        k = apply_rope(self.wk(x).view(b, t, g, d), cos, sin).transpose(1, 2)  # b g t d
        v = self.wv(x).view(b, t, g, d).transpose(1, 2)                        # b g t d
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        out = attend(q, k, v, mask, causal=True)                               # b h t d
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))
