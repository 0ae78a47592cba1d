"""``flash_attention``: the Triton FlashAttention-2 kernels as a differentiable PyTorch function.

Where it runs:

* on a CUDA GPU, in ``float16`` or ``bfloat16``. ``float32`` is refused on the GPU: ``tl.dot`` would
  round fp32 inputs to TF32 (10-bit mantissa) behind the caller's back, and the tiles are tuned for
  16-bit tensor-core inputs. Cast to bf16, or use ``attn_backend="sdpa"`` for fp32;
* on a CPU through Triton's interpreter (``TRITON_INTERPRET=1`` set before ``minillama.kernels``
  is first imported), in ``float32`` (exact, for testing against the einops reference) or
  ``float16``. Not ``bfloat16``: NumPy has no bf16, and the interpreter's ``tl.dot`` multiplies the
  raw bf16 bit patterns as integers. The interpreter is slow: it is for correctness, never speed.

Head dims 32, 64 and 128; any sequence lengths. Grouped-query and multi-query attention read
their shared K/V heads directly (``h % g == 0``); nothing is repeated in memory.
"""

from __future__ import annotations

import math

import torch

from .flash_backward import flash_backward
from .flash_forward import flash_forward
from .tuning import HEAD_DIMS, INTERPRET

GPU_DTYPES = (torch.float16, torch.bfloat16)
INTERPRETER_DTYPES = (torch.float32, torch.float16)


class FlashAttention(torch.autograd.Function):
    """Saves ``q, k, v``, the output and the row logsumexp; the backward recomputes the
    probabilities tile by tile instead of storing them."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                sm_scale: float) -> torch.Tensor:
        o, lse = flash_forward(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do: torch.Tensor):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward(_last_axis_contiguous(do), q, k, v, o, lse, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def _last_axis_contiguous(x: torch.Tensor) -> torch.Tensor:
    # The kernels take any strides for b, h and t but address d as consecutive elements.
    return x if x.stride(-1) == 1 else x.contiguous()


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    """Raise ``TypeError``/``ValueError``/``RuntimeError`` saying why the kernel cannot run."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"flash_attention: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"flash_attention: {name} must be 4-d ({'b h t d' if name == 'q' else 'b g s d'}), "
                             f"got shape {tuple(x.shape)}")
    b, h, t, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"flash_attention: k and v must have the same shape (b, g, s, d), "
                         f"got {tuple(k.shape)} and {tuple(v.shape)}")
    bk, g, s, dk = k.shape
    if bk != b or dk != d:
        raise ValueError(f"flash_attention: k/v (b, g, s, d) = {tuple(k.shape)} must match q (b, h, t, d) = "
                         f"{tuple(q.shape)} in batch and head dim")
    if min(b, h, g, t, s) < 1:
        raise ValueError(f"flash_attention: b, h, g, t and s must all be >= 1, got b={b}, h={h}, g={g}, t={t}, s={s}")
    if h % g != 0:
        raise ValueError(f"flash_attention: query heads h={h} must be a multiple of key/value heads g={g}; "
                         f"allowed g: divisors of {h}")
    if d not in HEAD_DIMS:
        raise ValueError(f"flash_attention: head dim d={d} is not supported; allowed: {HEAD_DIMS}")
    if causal and t > s:
        raise ValueError(f"flash_attention: causal attention needs t <= s (the queries are the last t of s "
                         f"positions), got t={t}, s={s}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"flash_attention: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flash_attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    _check_device_and_dtype(q)


def _check_device_and_dtype(q: torch.Tensor) -> None:
    if INTERPRET:
        if q.device.type != "cpu":
            raise RuntimeError(f"flash_attention: Triton's interpreter (TRITON_INTERPRET=1) runs on CPU tensors, "
                               f"got a tensor on {q.device}; unset TRITON_INTERPRET to compile for the GPU")
        if q.dtype not in INTERPRETER_DTYPES:
            raise TypeError(f"flash_attention: dtype {q.dtype} is not supported by the interpreter; "
                            f"allowed: {INTERPRETER_DTYPES}")
        return
    if not torch.cuda.is_available():
        raise RuntimeError("flash_attention: no CUDA GPU is available and Triton's interpreter is off; set the "
                           "environment variable TRITON_INTERPRET=1 before minillama.kernels is first imported "
                           "to run the kernels on the CPU (slowly), or use attn_backend='sdpa'")
    if q.device.type != "cuda":
        raise RuntimeError(f"flash_attention: compiled kernels need CUDA tensors, got a tensor on {q.device}")
    if q.dtype not in GPU_DTYPES:
        raise TypeError(f"flash_attention: dtype {q.dtype} is not supported on the GPU; allowed: {GPU_DTYPES} "
                        f"(fp32 would silently run as TF32; cast to bfloat16 or use attn_backend='sdpa')")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    sm_scale: float | None = None) -> torch.Tensor:
    """Softmax attention ``softmax(sm_scale * q k^T) v`` without materialising the scores.

    ``q (b, h, t, d)``, ``k, v (b, g, s, d)`` with ``h % g == 0`` (query head ``i`` reads K/V head
    ``i // (h / g)``). With ``causal`` the mask is aligned to the end, as when decoding on a KV
    cache: query ``i`` sees keys ``j <= i + s - t``. ``sm_scale`` defaults to ``1 / sqrt(d)``.
    Returns ``(b, h, t, d)`` in the input dtype; differentiable in ``q``, ``k`` and ``v``.
    """
    check_inputs(q, k, v, causal)
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[-1])
    if not (isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"flash_attention: sm_scale must be a finite float > 0 or None, got {sm_scale!r}")
    q, k, v = (_last_axis_contiguous(x) for x in (q, k, v))
    return FlashAttention.apply(q, k, v, bool(causal), float(sm_scale))
