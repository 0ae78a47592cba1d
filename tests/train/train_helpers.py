"""Shared pieces of the training tests: a model small enough for a handful of CPU steps in
well under a second, and a token stream it can learn (a noisy repeating pattern).

(A uniquely named module rather than conftest.py, so that importing it cannot pick up another
test folder's conftest.)"""

from __future__ import annotations

import numpy as np

from helpers import tiny_config
from minillama import Llama
from minillama.train import TrainConfig

VOCAB = 64
# The training tests' model: one layer, a few CPU steps in well under a second.
SHAPE = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=VOCAB, max_seq_len=32)


def token_stream(n: int, seed: int = 0) -> np.ndarray:
    """A period-12 pattern with 10% of tokens replaced at random: learnable, but not trivially."""
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, VOCAB, size=12)
    ids = pattern[np.arange(n) % 12]
    noise = rng.random(n) < 0.1
    ids[noise] = rng.integers(0, VOCAB, size=int(noise.sum()))
    return ids.astype(np.uint16)


def train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(steps=12, lr=3e-3, warmup_steps=3, grad_accum=2, eval_interval=4,
                                 checkpoint_interval=3, keep_last=2, progress=False), **overrides})


class ListBatches:
    """A resumable batch source that cycles through a fixed list."""

    def __init__(self, batches: list) -> None:
        self.batches, self.position = batches, 0

    def __next__(self):
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def new_model(seed: int = 0, **overrides) -> Llama:
    return Llama(tiny_config(**{**SHAPE, **overrides}), seed=seed)
