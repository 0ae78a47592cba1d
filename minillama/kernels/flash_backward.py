"""FlashAttention-2 backward pass in Triton: three kernels, no ``(t, s)`` matrix, no atomics.

With ``P = softmax(scale * Q K^T)`` recomputed tile by tile from the saved logsumexp:

* ``delta = rowsum(dO * O)`` (preprocess kernel): the term ``rowsum(P * dP)`` of the softmax
  gradient, computed once per query row instead of once per key tile;
* ``dV = P^T dO`` and ``dK = scale * dS^T Q`` with ``dS = P * (dO V^T - delta)`` (one program per
  key tile of one (batch, K/V head), grid ``(cdiv(s, BLOCK_N), b g)``): the program holds its
  K and V tile and loops over the ``r`` query heads that share this K/V head and, for each, over
  the query tiles that can see its keys. The group's gradient is summed inside one program, so
  GQA/MQA need neither repeated K/V nor atomic adds, and the result is deterministic;
* ``dQ = scale * dS K`` (one program per query tile of one (batch, head), grid
  ``(cdiv(t, BLOCK_M), b h)``): the same key loop as the forward pass.

Both loops skip the tiles above the causal diagonal and run the mask only on the boundary tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .flash_forward import key_loop_bounds
from .tuning import AUTOTUNE_KEY, DELTA_BLOCK_M, DKDV_CONFIGS, DQ_CONFIGS, seq_bucket


@triton.jit
def _delta_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
                  H, T, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * T + offs_m, delta, mask=row_ok)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot, offs_n, offs_d,
                lo, hi, T, S, qk_scale, MASKED: tl.constexpr, BLOCK_M: tl.constexpr):
    """Add the contributions of query tiles ``[lo, hi)`` of one head to the key tile's dK, dV.

    Works on transposed tiles (keys along rows) so that dV and dK come out of a plain ``tl.dot``.
    Query rows past ``t`` load as zeros with logsumexp ``+inf``: their probabilities are 0 and
    they add nothing, without a mask in the unmasked loop.
    """
    shift = S - T
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < T
        q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        do = tl.load(do_base + offs_m[:, None] * stride_dot + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        lse = tl.load(lse_base + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
        scores_t = tl.dot(k, tl.trans(q)) * qk_scale  # (BLOCK_N, BLOCK_M)
        p_t = tl.exp2(scores_t - lse[None, :])
        if MASKED:  # only the causal diagonal needs it; tails are handled by the zero loads
            p_t = tl.where(offs_n[:, None] <= offs_m[None, :] + shift, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, acc=dv)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, acc=dk)
    return dk, dv


@triton.autotune(configs=DKDV_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV,
                 stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks,
                 stride_vb, stride_vh, stride_vs, stride_dob, stride_doh, stride_dot,
                 stride_dkb, stride_dkh, stride_dks, stride_dvb, stride_dvh, stride_dvs,
                 H, R, T, S, sm_scale, qk_scale, T_BUCKET, S_BUCKET,
                 CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bg = tl.program_id(1)
    G = H // R
    b = (bg // G).to(tl.int64)
    g = (bg % G).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n < S
    k = tl.load(K + b * stride_kb + g * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :],
                mask=key_ok[:, None], other=0.0)
    v = tl.load(V + b * stride_vb + g * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :],
                mask=key_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Query tiles before `first` cannot see any key of this tile (causal), tiles from `full_from`
    # on see all of them; in between lies the diagonal, which is masked.
    shift = S - T
    if CAUSAL:
        first = tl.maximum(start_n - shift, 0) // BLOCK_M * BLOCK_M
        full_from = tl.maximum((tl.maximum(start_n + BLOCK_N - 1 - shift, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M,
                               first)
        masked_end = tl.minimum(full_from, T)
    else:
        first = 0
        full_from = 0
        masked_end = 0
    for r in range(R):  # the query heads of this K/V head's group
        h = g * R + r
        bh = b * H + h
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        lse_base = LSE + bh * T
        delta_base = DELTA + bh * T
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                             offs_n, offs_d, first, masked_end, T, S, qk_scale, True, BLOCK_M)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                             offs_n, offs_d, full_from, T, T, S, qk_scale, False, BLOCK_M)

    dk = dk * sm_scale  # the scores were scale * Q K^T
    tl.store(DK + b * stride_dkb + g * stride_dkh + offs_n[:, None] * stride_dks + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + b * stride_dvb + g * stride_dvh + offs_n[:, None] * stride_dvs + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d, lo, hi, T, S,
              qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Add the contributions of key tiles ``[lo, hi)`` to the query tile's dQ (unscaled)."""
    shift = S - T
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None] * stride_ks + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None] * stride_vs + offs_d[None, :]
        if MASKED:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < S, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < S, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        p = tl.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None])
        if MASKED:
            allowed = offs_n[None, :] < S
            if CAUSAL:
                allowed = allowed & (offs_n[None, :] <= offs_m[:, None] + shift)
            p = tl.where(allowed, p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, acc=dq)
    return dq


@triton.autotune(configs=DQ_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _dq_kernel(Q, K, V, DO, LSE, DELTA, DQ,
               stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks,
               stride_vb, stride_vh, stride_vs, stride_dob, stride_doh, stride_dot,
               stride_dqb, stride_dqh, stride_dqt,
               H, R, T, S, sm_scale, qk_scale, T_BUCKET, S_BUCKET,
               CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    g = h // R
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * T + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + g * stride_kh
    v_base = V + b * stride_vb + g * stride_vh

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_end, end = key_loop_bounds(start_m, T, S, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d,
                   0, full_end, T, S, qk_scale, False, CAUSAL, BLOCK_N)
    dq = _dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d,
                   full_end, end, T, S, qk_scale, True, CAUSAL, BLOCK_N)
    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqt + offs_d[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


def flash_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                   lse: torch.Tensor, causal: bool, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``dq (b, h, t, d)``, ``dk, dv (b, g, s, d)`` from ``do (b, h, t, d)`` and the
    forward pass's inputs, output and base-2 logsumexp ``lse (b, h, t)``."""
    b, h, t, d = q.shape
    g, s = k.shape[1], k.shape[2]
    r = h // g
    qk_scale = sm_scale * 1.4426950408889634  # log2(e)
    buckets = (seq_bucket(t), seq_bucket(s))

    delta = torch.empty_like(lse)
    _delta_kernel[(triton.cdiv(t, DELTA_BLOCK_M), b * h)](
        o, do, delta, *o.stride()[:3], *do.stride()[:3], h, t, HEAD_DIM=d, BLOCK_M=DELTA_BLOCK_M)

    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])

    def dkdv_grid(meta):
        return (triton.cdiv(s, meta["BLOCK_N"]), b * g)

    _dkdv_kernel[dkdv_grid](q, k, v, do, lse, delta, dk, dv, *strides, *dk.stride()[:3], *dv.stride()[:3],
                            h, r, t, s, sm_scale, qk_scale, *buckets, CAUSAL=causal, HEAD_DIM=d)

    def dq_grid(meta):
        return (triton.cdiv(t, meta["BLOCK_M"]), b * h)

    _dq_kernel[dq_grid](q, k, v, do, lse, delta, dq, *strides, *dq.stride()[:3],
                        h, r, t, s, sm_scale, qk_scale, *buckets, CAUSAL=causal, HEAD_DIM=d)
    return dq, dk, dv
