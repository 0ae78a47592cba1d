"""Fixtures of the post-training tests: one small TinyWorld, a tokenizer trained on its text, and
tiny random chat models sized for that tokenizer."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from minillama.config import LlamaConfig
from minillama.data import TinyWorld
from minillama.model import Llama
from minillama.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def world() -> TinyWorld:
    return TinyWorld(seed=0)


@pytest.fixture(scope="session")
def tokenizer(world: TinyWorld) -> Tokenizer:
    """A 512-token BPE on 60k characters of the world's text (trains in well under a second)."""
    return Tokenizer.train([world.pretraining_text(60_000)], 512)


@pytest.fixture
def tiny_model(tokenizer: Tokenizer) -> Callable[..., Llama]:
    """``tiny_model(seed=0, **overrides)``: a random Llama (dim 32, 2 layers) for ``tokenizer``, eval mode."""

    def make(seed: int = 0, **overrides: Any) -> Llama:
        fields = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tokenizer.vocab_size, multiple_of=16,
                      max_seq_len=384, max_batch_size=4, init_std=0.1)
        return Llama(LlamaConfig(**{**fields, **overrides}), seed=seed).eval()

    return make


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
