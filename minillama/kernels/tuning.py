"""Launch configurations of the FlashAttention kernels and how the kernels are run.

On a GPU each kernel is autotuned over tile sizes, warps and pipeline stages chosen for Hopper
(H100/H200); Triton times every configuration once per autotune key and keeps the fastest, and
configurations that need more shared memory than the GPU has are discarded by the autotuner.

Under Triton's interpreter (``TRITON_INTERPRET=1``, the CPU path used by the tests) the kernels
run as NumPy code, one program at a time, so timing configurations would be slow and
meaningless: a single small configuration is used. Its tiles are deliberately not square
(``BLOCK_M != BLOCK_N``) so that the tests exercise diagonal tiles that straddle several key
(or query) tiles, as the rectangular GPU configurations do.
"""

from __future__ import annotations

import os

import triton

# Triton decides between compiling and interpreting when ``triton.jit`` decorates a kernel, i.e.
# when minillama.kernels is imported. Read the variable the way Triton does (its env knobs accept
# 1/true/on/yes) so the flag and the kernels agree.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")

HEAD_DIMS = (32, 64, 128)


def _hopper(blocks: list[tuple[int, int]], warps=(4, 8), stages=(2, 3, 4)) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
            for m, n in blocks for w in warps for st in stages]


_SQUARE_AND_RECT = [(64, 64), (64, 128), (128, 64), (128, 128)]

if INTERPRET:
    # BLOCK_M tiles queries, BLOCK_N tiles keys, in every kernel.
    FORWARD_CONFIGS = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    DKDV_CONFIGS = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
    DQ_CONFIGS = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
else:
    FORWARD_CONFIGS = _hopper(_SQUARE_AND_RECT)
    # The dK/dV program holds two fp32 (BLOCK_N, d) accumulators plus K and V tiles; with
    # d = 128 the 128x128 tiles spill registers, which the timing will reveal and reject.
    DKDV_CONFIGS = _hopper(_SQUARE_AND_RECT, stages=(2, 3))
    DQ_CONFIGS = _hopper(_SQUARE_AND_RECT, stages=(2, 3))

# Autotune keys. The sequence lengths enter only as power-of-two buckets (see seq_bucket), so a
# KV cache that grows by one token per decoding step does not trigger a re-tune at every step.
AUTOTUNE_KEY = ["T_BUCKET", "S_BUCKET", "R", "HEAD_DIM", "CAUSAL"]

# The delta = rowsum(dO * O) preprocessing is a cheap streaming reduction: no tuning.
DELTA_BLOCK_M = 32 if INTERPRET else 128


def seq_bucket(n: int) -> int:
    """Power of two at or above ``n``, clamped to [16, 16384]: the autotune key of a length."""
    return min(max(triton.next_power_of_2(n), 16), 16384)
