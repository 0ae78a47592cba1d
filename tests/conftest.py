"""Fixtures shared by the core tests: small seeded configs and fully random models.

Models are tiny (dim 64, 2 layers, vocab 97) so that a parity test costs milliseconds. Helpers in
subfolders add their own conftest.py; keep this one small.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest
import torch
from torch import nn

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when minillama.kernels is first
# imported: set it before any test module can import it, so CPU runs use the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from minillama.config import LlamaConfig
from minillama.model import Llama

SMALL = dict(dim=64, n_layers=2, n_heads=4, vocab_size=97, multiple_of=16, max_seq_len=64, max_batch_size=8)


def pytest_configure(config: pytest.Config) -> None:
    # Under `pytest -n N` each worker would start torch with one thread per core: N times too many.
    # Tiny models then spend their time handing work between threads (50x slower on 2 cores).
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def make_small_config(**overrides: Any) -> LlamaConfig:
    return LlamaConfig(**{**SMALL, **overrides})


def randomize(model: nn.Module, seed: int = 0, std: float = 0.08) -> nn.Module:
    """Draw every parameter at random, the RMSNorm scales included.

    The default init leaves the norms at 1, which would hide a swapped attention_norm/ffn_norm or
    a norm that is never loaded; ``std`` is large enough that attention is far from uniform and the
    logits are O(1), small enough that float32 round-off stays near 1e-6.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else std * noise)
    return model.eval()


@pytest.fixture
def small_config() -> Callable[..., LlamaConfig]:
    """``small_config(**overrides) -> LlamaConfig`` (dim 64, 2 layers, 4 heads, vocab 97)."""
    return make_small_config


@pytest.fixture
def random_weights() -> Callable[..., nn.Module]:
    """``random_weights(module, seed=0)``: :func:`randomize` for modules built elsewhere (transformers)."""
    return randomize


@pytest.fixture
def random_llama() -> Callable[..., Llama]:
    """``random_llama(seed=0, **config_overrides) -> Llama`` in eval mode with random weights."""

    def make(seed: int = 0, **overrides: Any) -> Llama:
        return randomize(Llama(make_small_config(**overrides), seed=seed), seed)

    return make
