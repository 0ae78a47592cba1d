"""Triton kernels. :func:`flash_attention` is FlashAttention-2 (forward and backward, GQA/MQA).

Triton chooses between compiling for the GPU and interpreting on the CPU when this package is
imported: set ``TRITON_INTERPRET=1`` before the first ``import minillama.kernels`` to run the
kernels on a machine without a CUDA GPU.
"""

from .flash import FlashAttention, flash_attention
from .tuning import INTERPRET

__all__ = ["INTERPRET", "FlashAttention", "flash_attention"]
