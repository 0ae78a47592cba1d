"""FlashAttention-2 forward pass in Triton.

One program computes one tile of ``BLOCK_M`` query rows of one (batch, head): grid
``(cdiv(t, BLOCK_M), b h)``. It streams the key/value tiles of its group's K/V head through an
online softmax (running row max ``m``, running denominator ``l``, unnormalised output ``acc``), so
the ``(t, s)`` score matrix never exists; it writes the output and the row logsumexp that the
backward pass needs to recompute the probabilities.

Scores live in base 2: ``qk_scale = sm_scale * log2(e)`` is folded into the scores once, so every
exponential is a single ``exp2`` and the saved logsumexp is ``log2(sum(2 ** scores))``.

Masking (causal, aligned to the end: query ``i`` sees keys ``j <= i + s - t``; and key tiles that
run past ``s``) is only needed near the diagonal and at the tail, so the key loop is split in two:
tiles every row of the query tile can see in full run without any mask, then the boundary tiles
run masked. Tiles wholly above the causal diagonal are never visited (the loop stops before them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import AUTOTUNE_KEY, FORWARD_CONFIGS, seq_bucket


@triton.jit
def key_loop_bounds(start_m, T, S, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For the query tile starting at ``start_m``: key tiles ``[0, full_end)`` need no mask,
    ``[full_end, end)`` need one; keys at or after ``end`` are invisible to the whole tile."""
    shift = S - T
    if CAUSAL:
        # Last key seen by the tile's last row; tiles ending at or before the first row's last
        # key are visible in full.
        end = tl.minimum(start_m + BLOCK_M + shift, S)
        full_end = tl.minimum((start_m + shift + 1) // BLOCK_N * BLOCK_N, S // BLOCK_N * BLOCK_N)
    else:
        end = S
        full_end = S // BLOCK_N * BLOCK_N
    return full_end, end


@triton.jit
def _forward_tiles(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d, lo, hi, T, S,
                   qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold key tiles ``[lo, hi)`` into the running softmax state ``(acc, l_i, m_i)``."""
    shift = S - T
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None] * stride_ks + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None] * stride_vs + offs_d[None, :]
        if MASKED:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < S, other=0.0)
        else:
            k = tl.load(k_ptrs)
        scores = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_M, BLOCK_N), base-2 units
        if MASKED:
            allowed = offs_n[None, :] < S
            if CAUSAL:
                allowed = allowed & (offs_n[None, :] <= offs_m[:, None] + shift)
            scores = tl.where(allowed, scores, float("-inf"))
        # Key 0 is in the first tile and every row may see it, so m_new is finite from the
        # first tile on and exp2(m_i - m_new) never meets (-inf) - (-inf).
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs, mask=offs_n[:, None] < S, other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc=acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=FORWARD_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _flash_forward_kernel(Q, K, V, O, LSE,
                          stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks,
                          stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_ot,
                          H, R, T, S, qk_scale, T_BUCKET, S_BUCKET,
                          CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    g = h // R  # the K/V head this query head reads: no repeated K/V in memory
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + g * stride_kh
    v_base = V + b * stride_vb + g * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_end, end = key_loop_bounds(start_m, T, S, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _forward_tiles(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d,
                                   0, full_end, T, S, qk_scale, False, CAUSAL, BLOCK_N)
    acc, l_i, m_i = _forward_tiles(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d,
                                   full_end, end, T, S, qk_scale, True, CAUSAL, BLOCK_N)

    out = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.log2(l_i), mask=row_ok)


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel on checked inputs.

    ``q (b, h, t, d)``, ``k, v (b, g, s, d)``, each with a contiguous last axis. Returns the output
    ``(b, h, t, d)`` (same dtype as ``q``) and the base-2 logsumexp ``(b, h, t)`` in float32.
    """
    b, h, t, d = q.shape
    g, s = k.shape[1], k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty((b, h, t), device=q.device, dtype=torch.float32)
    qk_scale = sm_scale * 1.4426950408889634  # log2(e)

    def grid(meta):
        return (triton.cdiv(t, meta["BLOCK_M"]), b * h)

    _flash_forward_kernel[grid](
        q, k, v, o, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        h, h // g, t, s, qk_scale, seq_bucket(t), seq_bucket(s),
        CAUSAL=causal, HEAD_DIM=d)
    return o, lse
