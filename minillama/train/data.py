"""Pretraining data: token ids in a flat binary file, read as a memmap, cut into random windows.

A data directory holds ``train.bin`` and ``val.bin`` (the token ids of the whole corpus one
after another, as ``uint16`` when every id fits, else ``int32``) and ``meta.json`` with at least
``vocab_size``. Memory-mapping means a corpus larger than RAM costs nothing to open.
:func:`tokenize_corpus` writes one from the text of a ``minillama data`` folder.

:class:`WindowBatches` is the batch source the trainer draws from. Draw number ``position`` is a
pure function of ``(seed, position)``, so saving ``position`` in a checkpoint is all it takes to
resume the data stream exactly. Each draw picks ``batch_size`` windows for the whole job and
every rank keeps its own slice: 2 ranks at ``batch_size / 2`` rows each train on exactly the rows
1 rank trains on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from ..fileio import atomic_write, read_json, save_json
from ..tokenizer import Tokenizer

TRAIN_FILE, VAL_FILE, META_FILE = "train.bin", "val.bin", "meta.json"
TOKEN_DTYPES = ("uint16", "int32")


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer needs from its training data: an endless iterator whose position can be
    saved to JSON and restored, so a resumed run sees the batches the first run would have seen."""

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id ``< vocab_size`` fits in 16 bits (half the disk of int32), else ``int32``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def write_tokens(path: str | Path, ids: np.ndarray | list[int], vocab_size: int) -> int:
    """Write ``ids`` as a flat token file (atomically); returns the number of tokens."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"token ids must be a flat 1-D array, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, vocab_size={vocab_size}), got [{ids.min()}, {ids.max()}]")
    data = ids.astype(token_dtype(vocab_size))
    atomic_write(path, lambda p: data.tofile(p))
    return int(data.size)


def save_token_dataset(directory: str | Path, train_ids: np.ndarray | list[int], val_ids: np.ndarray | list[int],
                       vocab_size: int, **meta: Any) -> Path:
    """Write ``train.bin``, ``val.bin`` and ``meta.json`` (``vocab_size``, ``dtype``, token counts and
    any extra ``meta``, e.g. the tokenizer's path) into ``directory``."""
    directory = Path(directory)
    n_train = write_tokens(directory / TRAIN_FILE, train_ids, vocab_size)
    n_val = write_tokens(directory / VAL_FILE, val_ids, vocab_size)
    save_json(directory / META_FILE, {**meta, "vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name,
                                      "train_tokens": n_train, "val_tokens": n_val})
    return directory


def documents(path: str | Path) -> list[str]:
    """The blank-line-separated documents of a TinyWorld text file."""
    return [d.strip() for d in Path(path).read_text(encoding="utf-8").split("\n\n") if d.strip()]


def encode_documents(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    """Every document as ``BOS ids EOS``, concatenated: the model learns where documents start
    and end, and a training window that spans two documents sees the boundary."""
    ids = tokenizer.encode_batch(docs, bos=True, eos=True)
    return np.fromiter((i for doc in ids for i in doc), dtype=np.int64)


def tokenize_corpus(text_dir: str | Path, tokenizer: Tokenizer, out_dir: str | Path,
                    meta: dict[str, Any] | None = None) -> Path:
    """``train.txt`` and ``val.txt`` of a ``minillama data`` folder, encoded document by document
    (:func:`encode_documents`), as the token files of ``out_dir`` (``meta`` goes into its meta.json)."""
    text_dir = Path(text_dir)
    splits = [encode_documents(tokenizer, documents(text_dir / f"{split}.txt")) for split in ("train", "val")]
    return save_token_dataset(out_dir, *splits, tokenizer.vocab_size, **(meta or {}))


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: no {META_FILE}; a token folder holds {TRAIN_FILE}, {VAL_FILE} and {META_FILE}")
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("vocab_size"), int) or meta["vocab_size"] < 1:
        raise ValueError(f"{path}: vocab_size must be a positive int, got {meta!r:.80}")
    return meta


def open_tokens(path: str | Path, vocab_size: int, dtype: str | None = None) -> np.memmap:
    """Memory-map a token file read-only. ``dtype`` defaults to :func:`token_dtype` of the vocabulary."""
    dtype = token_dtype(vocab_size) if dtype is None else np.dtype(dtype)
    if dtype.name not in TOKEN_DTYPES:
        raise ValueError(f"token file dtype must be one of {TOKEN_DTYPES}, got {dtype.name!r}")
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % dtype.itemsize:
        raise ValueError(f"{path}: {size} bytes is not a positive whole number of {dtype.name} tokens")
    return np.memmap(path, dtype=dtype, mode="r")


def open_split(directory: str | Path, split: str) -> np.memmap:
    """``split`` is ``"train"`` or ``"val"``: the memmap of ``<split>.bin`` in a data directory."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    meta = read_meta(directory)
    return open_tokens(Path(directory) / f"{split}.bin", meta["vocab_size"], meta.get("dtype"))


def check_shard(batch_size: int, rank: int, world_size: int) -> None:
    """A global batch splits evenly over the ranks, and ``rank`` is one of them."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by world_size ({world_size}); "
                         f"allowed batch sizes: multiples of {world_size}")


class WindowBatches:
    """Random ``(b, t + 1)`` windows of a token array as batches ``{"tokens": ...}``: inputs are
    ``[:, :-1]``, targets ``[:, 1:]`` (:func:`minillama.sequences.lm_loss`).

    ``batch_size`` is the global batch (all ranks together); this rank yields rows
    ``[rank * b_local, (rank + 1) * b_local)`` of every draw, ``b_local = batch_size / world_size``.
    Windows start anywhere (they may cross document boundaries, as in Llama's packed pretraining).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, position: int = 0) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        check_shard(batch_size, rank, world_size)
        if len(tokens) < seq_len + 1:
            raise ValueError(f"a window needs seq_len + 1 = {seq_len + 1} tokens, the data has {len(tokens)}")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.rank, self.world_size, self.position = rank, world_size, position

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def starts(self, position: int) -> np.ndarray:
        """Start offsets of the global batch of draw ``position``, ``(batch_size,)``."""
        rng = np.random.default_rng([self.seed, position])
        return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        b = self.local_batch_size
        mine = self.starts(self.position)[self.rank * b:(self.rank + 1) * b]
        self.position += 1
        rows = np.stack([self.tokens[s:s + self.seq_len + 1] for s in mine]).astype(np.int64)
        return {"tokens": torch.from_numpy(rows)}

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "batch_size": self.batch_size, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_size", "seq_len"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume the data stream: checkpoint has {key}={state[key]}, this run has "
                                 f"{key}={getattr(self, key)}; rerun with the same {key} or start a fresh run")
        self.position = int(state["position"])
