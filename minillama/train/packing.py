"""Packed SFT batches: whole chat examples filling rows of ``seq_len + 1`` tokens.

Llama 2 concatenated its chats into full rows of 4,096 tokens. Here the chats (a few dozen tokens
each), in a seeded random order, fill rows of ``seq_len + 1`` tokens whole: a chat that would not
fit starts the next row, and the rest of a row is padding with label ``-100``. Cutting the stream
at fixed row boundaries instead would train some answers without their question in view (see
:mod:`minillama.stages.sft` for what that cost). Inputs are ``row[:-1]``, targets ``row[1:]``.

The same batches serve supervised fine-tuning and rejection sampling's fine-tuning on kept answers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..sequences import IGNORE_INDEX, Example
from .data import check_shard

PACKING_STREAM = 2**32 - 1  # the random stream of the packing order, apart from the epochs' [seed, e]


def _flatten(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not examples:
        raise ValueError("examples must not be empty")
    for k, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels) or not ids:
            raise ValueError(f"examples[{k}]: ids and labels must be non-empty and of equal length, "
                             f"got {len(ids)} and {len(labels)}")
    lengths = np.array([len(ids) for ids, _ in examples], dtype=np.int64)
    ids = np.fromiter((i for e, _ in examples for i in e), dtype=np.int64, count=int(lengths.sum()))
    labels = np.fromiter((i for _, e in examples for i in e), dtype=np.int64, count=int(lengths.sum()))
    return ids, labels, lengths


# ---------------------------------------------------------------------------------- packed batches
def pack_whole(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Greedy packing: examples (by index, in the given order) fill a row of ``width`` tokens until
    the next one would not fit, which then starts the next row. No example is ever cut."""
    rows: list[list[int]] = []
    used = width
    for index, n in enumerate(lengths):
        if n > width:
            raise ValueError(f"example {index} has {n} tokens, more than a row of {width}; "
                             f"allowed: seq_len >= {n - 1}")
        if used + n > width:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += n
    return rows


def stack_rows(rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """``(ids, labels)`` rows -> a batch ``{"tokens", "labels"}``, each ``(b, seq_len + 1)``."""
    return {"tokens": torch.from_numpy(np.stack([r[0] for r in rows])),
            "labels": torch.from_numpy(np.stack([r[1] for r in rows]))}


class PackedSFTBatches:
    """Batches ``{"tokens", "labels"}`` of shape ``(b, seq_len + 1)`` packed from whole chat examples.

    The examples, in the seeded order :meth:`packing_order`, fill rows of ``seq_len + 1`` tokens
    (:func:`pack_whole`); the rest of a row is ``pad_id`` with label ``-100``. Padding sits at the
    end of a row, so under the causal mask no real token ever attends to it. Epoch ``e`` visits
    the rows in the order ``default_rng([seed, e]).permutation``. The rows of all epochs form one
    sequence; draw ``p`` takes rows ``[p B, (p + 1) B)`` (``B = batch_size``, the global batch) and
    this rank keeps its ``batch_size / world_size`` of them, as
    :class:`~minillama.train.data.WindowBatches` does. ``steps_per_epoch = ceil(rows_per_epoch / B)``;
    with ``epochs`` set, the source stops after ``epochs * steps_per_epoch`` draws (None: endless).
    Resumable: ``state_dict()`` is the draw position plus what must match on resume.
    """

    def __init__(self, examples: Sequence[Example], batch_size: int, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, epochs: int | None = None, position: int = 0, pad_id: int = 0) -> None:
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("world_size", world_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        check_shard(batch_size, rank, world_size)
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"epochs must be None (endless) or an int >= 1, got {epochs!r}")
        self.ids, self.labels, self.lengths = _flatten(examples)
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        self.batch_size, self.seq_len, self.seed, self.pad_id = batch_size, seq_len, seed, pad_id
        self.rank, self.world_size, self.epochs, self.position = rank, world_size, epochs, position
        order = self.packing_order()
        self.rows = [order[r].tolist() for r in pack_whole(self.lengths[order].tolist(), seq_len + 1)]
        self.rows_per_epoch = len(self.rows)
        self.steps_per_epoch = math.ceil(self.rows_per_epoch / batch_size)
        self.fingerprint = zlib.crc32(self.labels.tobytes(), zlib.crc32(self.ids.tobytes()))

    @property
    def n_examples(self) -> int:
        return len(self.lengths)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def total_steps(self) -> int | None:
        return None if self.epochs is None else self.epochs * self.steps_per_epoch

    @property
    def padding_share(self) -> float:
        """The share of row tokens that are padding."""
        return 1.0 - len(self.ids) / (self.rows_per_epoch * (self.seq_len + 1))

    def packing_order(self) -> np.ndarray:
        """The order in which the examples fill the rows: a seeded permutation of ``range(n_examples)``."""
        return np.random.default_rng([self.seed, PACKING_STREAM]).permutation(self.n_examples)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch``: a permutation of ``range(rows_per_epoch)``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows_per_epoch)

    def example(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Example ``e`` as it was given: ``(ids, labels)``."""
        span = slice(self.starts[e], self.starts[e] + self.lengths[e])
        return self.ids[span], self.labels[span]

    def packed_row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Packed row ``r`` (in packing order): ``(ids, labels)``, each ``(seq_len + 1,)``."""
        chats = [self.example(e) for e in self.rows[r]]
        ids = np.concatenate([c[0] for c in chats])
        labels = np.concatenate([c[1] for c in chats])
        pad = self.seq_len + 1 - len(ids)
        return (np.concatenate([ids, np.full(pad, self.pad_id, dtype=np.int64)]),
                np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)]))

    def row(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Global row ``k``: row ``k mod rows_per_epoch`` of its epoch's order."""
        epoch, j = divmod(k, self.rows_per_epoch)
        return self.packed_row(int(self.order(epoch)[j]))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.total_steps is not None and self.position >= self.total_steps:
            raise StopIteration
        first = self.position * self.batch_size + self.rank * self.local_batch_size
        rows = [self.row(k) for k in range(first, first + self.local_batch_size)]
        self.position += 1
        return stack_rows(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_size", "seq_len", "fingerprint"):
            if state[key] != getattr(self, key):
                what = "the examples differ" if key == "fingerprint" else f"this run has {key}={getattr(self, key)}"
                raise ValueError(f"cannot resume the SFT data stream: checkpoint has {key}={state[key]}, {what}; "
                                 f"rerun with the same data and settings or start a fresh run")
        self.position = int(state["position"])
