"""Preference-pair batches, for the reward models and DPO: both sides of every pair tokenized, and
batches of them in a resumable, seeded order, and :func:`train_on_pairs`, the one way both stages
train on them.

A batch of ``b`` pairs stacks the chosen responses on top of the rejected ones, ``(2b, t)`` right
padded, so that one forward pass scores both sides; ``rating`` (the index of each pair's level in
:data:`~minillama.data.RATING_LEVELS`) lets a loss read Llama 2's margins, which DPO ignores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..speed import Speed
from ..chat import encode_chat
from ..data.preferences import RATING_LEVELS, Pair
from ..model import LlamaBackbone
from ..sequences import pad_rows
from ..tokenizer import Tokenizer
from .loop import LossFn, TrainConfig, Trainer, mean_over_batches


@dataclass(frozen=True)
class EncodedPair:
    """A pair's two chats as ``(token ids, response mask)``, and its rating level's index."""

    chosen: tuple[list[int], list[bool]]
    rejected: tuple[list[int], list[bool]]
    rating: int


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[Pair], max_len: int) -> list[EncodedPair]:
    """Both sides of every pair through the chat template (longer than ``max_len``: ``ValueError``)."""
    return [EncodedPair(encode_chat(tokenizer, p.prompt, p.chosen, max_len=max_len),
                        encode_chat(tokenizer, p.prompt, p.rejected, max_len=max_len),
                        RATING_LEVELS.index(p.rating)) for p in pairs]


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch of ``b`` pairs: rows ``[:b]`` are the chosen responses, ``[b:]`` the
    rejected ones. ``input_ids``, ``attention_mask``, ``response_mask`` (bool) ``(2b, t)``;
    ``rating (b,)``."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    input_ids, attention_mask = pad_rows([ids for ids, _ in rows], pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "response_mask": pad_rows([mask for _, mask in rows])[0].bool(),
            "rating": torch.tensor([p.rating for p in pairs], dtype=torch.long)}


class PairBatches:
    """Endless batches of ``batch_size`` pairs (:func:`collate_pairs`), a fresh permutation of the
    pairs every epoch. Draw ``position`` is a pure function of ``(seed, position)``, so the state
    to resume is one number."""

    def __init__(self, pairs: Sequence[EncodedPair], batch_size: int, seed: int = 0, pad_id: int = 0,
                 position: int = 0) -> None:
        if not pairs:
            raise ValueError("pairs must not be empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pairs, self.batch_size, self.seed, self.pad_id = list(pairs), batch_size, seed, pad_id
        self.position = position

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        epoch, i = divmod(self.position, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))
        self.position += 1
        return collate_pairs([self.pairs[k] for k in order[i * self.batch_size:(i + 1) * self.batch_size]],
                             self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "batch_size": self.batch_size,
                "n_pairs": len(self.pairs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in (("seed", self.seed), ("batch_size", self.batch_size), ("n_pairs", len(self.pairs))):
            if state[key] != value:
                raise ValueError(f"cannot resume the pair stream: checkpoint has {key}={state[key]}, this run has "
                                 f"{key}={value}; rerun with the same pairs and settings or start a fresh run")
        self.position = int(state["position"])

    def in_order(self) -> list[dict[str, torch.Tensor]]:
        """Every pair once, in the given order: the batches an evaluation reads."""
        return [collate_pairs(self.pairs[first:first + self.batch_size], self.pad_id)
                for first in range(0, len(self.pairs), self.batch_size)]


def train_on_pairs(model: LlamaBackbone, loss_fn: LossFn, tokenizer: Tokenizer, pairs: Sequence[Pair],
                   out_dir: str | Path, *, val_pairs: Sequence[Pair] = (), epochs: float = 1.0, lr: float = 1e-4,
                   batch_size: int = 16, warmup_share: float = 0.03, seed: int = 0, device: str = "auto",
                   progress: bool = True, speed: Speed = Speed()) -> list[dict[str, Any]]:
    """Train ``model`` on ``epochs`` passes over ``pairs`` with the shared :class:`~.loop.Trainer`
    (rerunning with the same ``out_dir`` resumes): ``batch_size`` pairs a step, a linear warmup over
    ``warmup_share`` of the steps, then cosine decay; a checkpoint every quarter of the run;
    ``loss_fn`` on ``val_pairs`` (if any) as the validation. Returns the trainer's records."""
    train = encode_pairs(tokenizer, pairs, model.config.max_seq_len)
    val = encode_pairs(tokenizer, val_pairs, model.config.max_seq_len)
    val_batches = PairBatches(val, batch_size, pad_id=tokenizer.pad_id).in_order() if val else []
    steps = max(1, math.ceil(epochs * len(train) / batch_size))
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, round(warmup_share * steps)) if steps > 1 else 0,
                         eval_interval=0, checkpoint_interval=max(1, steps // 4), seed=seed, device=device,
                         progress=progress, **speed.training())

    def val_fn(m: nn.Module) -> dict[str, float]:
        return mean_over_batches(m, loss_fn, val_batches)

    return Trainer(model, loss_fn, PairBatches(train, batch_size, seed, tokenizer.pad_id), config, out_dir,
                   val_fn if val else None).fit()
