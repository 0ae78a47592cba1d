"""Train / validation / test splits that cannot overlap.

A split is a function of a *key* (a story, an arithmetic problem, a fact, a phrasing), never of
the order things were drawn in: the generator draws a candidate, computes its key and keeps it
only for the key's split. Two splits therefore never share a key, and since each task's prompt
determines its key, they never share a prompt either.

* :func:`split_of` hashes a key; for unbounded key spaces (stories, sums).
* :func:`partition` deals a small finite set of keys (phrasings, facts) out by the fractions and
  guarantees every split at least one key, which hashing cannot promise for ten keys.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Hashable, Sequence

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be {len(SPLITS)} positive numbers (for {SPLITS}) summing to 1, "
                         f"got {fractions}")
    return fractions


def split_of(key: str, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split that ``key`` belongs to: a stable hash of ``(seed, key)`` cut by ``fractions``.

    crc32 rather than ``hash()``: Python salts ``hash`` of strings per process.
    """
    fractions = check_fractions(fractions)
    u = zlib.crc32(f"{seed}\x00{key}".encode()) / 2**32
    edge = 0.0
    for split, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return split
    return SPLITS[-1]


def partition(keys: Sequence[Hashable], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS,
              salt: str = "") -> dict[Hashable, str]:
    """Deal ``keys`` out to the splits: shuffled by ``(seed, salt)``, then cut by ``fractions`` with at
    least one key for each of val and test (and the rest for train). Needs ``len(keys) >= 3``."""
    fractions = check_fractions(fractions)
    keys = list(dict.fromkeys(keys))
    if len(keys) < len(SPLITS):
        raise ValueError(f"partition needs at least {len(SPLITS)} distinct keys, got {len(keys)}")
    random.Random(f"partition:{seed}:{salt}").shuffle(keys)
    n_val = max(1, round(fractions[1] * len(keys)))
    n_test = max(1, round(fractions[2] * len(keys)))
    n_val = min(n_val, len(keys) - 2)
    n_test = min(n_test, len(keys) - 1 - n_val)
    out = {k: "val" for k in keys[:n_val]}
    out.update({k: "test" for k in keys[n_val:n_val + n_test]})
    out.update({k: "train" for k in keys[n_val + n_test:]})
    return out
