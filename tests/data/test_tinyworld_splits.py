"""Split assignment: stable, by the fractions, and never empty."""

from __future__ import annotations

import pytest

from minillama.data.splits import SPLITS, partition, split_of


def test_split_of_is_stable_and_follows_the_fractions():
    keys = [f"story:{i}" for i in range(20_000)]
    first = [split_of(k, seed=0) for k in keys]
    assert first == [split_of(k, seed=0) for k in keys]
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(first.count(split) / len(keys) - share) < 0.01
    assert first != [split_of(k, seed=1) for k in keys]  # the seed matters
    skewed = [split_of(k, 0, (0.5, 0.25, 0.25)) for k in keys]
    assert abs(skewed.count("train") / len(keys) - 0.5) < 0.02


@pytest.mark.parametrize("n", [3, 4, 10, 33])
def test_partition_covers_every_key_and_every_split(n):
    keys = list(range(n))
    parts = partition(keys, seed=0)
    assert sorted(parts) == keys and set(parts.values()) == set(SPLITS)
    assert parts == partition(keys, seed=0)
    assert partition(keys, seed=0, fractions=(0.6, 0.2, 0.2), salt="x") == partition(keys, 0, (0.6, 0.2, 0.2), "x")
    if n >= 10:
        assert list(parts.values()).count("val") == round(0.1 * n)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fractions"):
        split_of("a", 0, (0.9, 0.1))
    with pytest.raises(ValueError, match="fractions"):
        partition([1, 2, 3], 0, (1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="at least 3"):
        partition([1, 2], 0)
