"""Packed SFT batches: whole chats fill rows with the seeded epoch stream, the batch source shards
over ranks and resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minillama.chat import chat_example
from minillama.sequences import IGNORE_INDEX
from minillama.train.packing import PackedSFTBatches, pack_whole


@pytest.fixture(scope="module")
def tasks(world):
    return world.chat_tasks("train", 40) + world.unsafe_tasks("train", 10)


@pytest.fixture(scope="module")
def examples(tokenizer, tasks):
    return [chat_example(tokenizer, t.prompt, t.reference) for t in tasks]


def _chats_of(ids: np.ndarray, bos_id: int) -> list[list[int]]:
    """The chats of a packed row, split at each ``<s>``, padding (id 0) stripped from the end."""
    ids = np.trim_zeros(ids, "b").tolist()
    starts = [k for k, i in enumerate(ids) if i == bos_id] + [len(ids)]
    return [ids[a:b] for a, b in zip(starts, starts[1:])]


def test_pack_whole_fills_rows_greedily_and_never_cuts_an_example() -> None:
    assert pack_whole([3, 4, 2, 5, 1], width=7) == [[0, 1], [2, 3], [4]]
    assert pack_whole([7, 7], width=7) == [[0], [1]]
    with pytest.raises(ValueError, match="seq_len >= 7"):
        pack_whole([3, 8], width=7)


def test_packing_fills_rows_with_whole_chats(tokenizer, examples) -> None:
    source = PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=3)
    order = source.packing_order()
    assert sorted(order) == list(range(len(examples)))
    # Every row is whole chats back to back, then padding with no label; together they are every chat once.
    rows = [source.packed_row(r) for r in range(source.rows_per_epoch)]
    assert all(ids.shape == (257,) and labels.shape == (257,) for ids, labels in rows)
    seen = [chat for ids, _ in rows for chat in _chats_of(ids, tokenizer.bos_id)]
    assert seen == [examples[i][0] for i in order]
    for r, (ids, labels) in enumerate(rows):
        mine = [examples[i] for i in source.rows[r]]
        used = sum(len(e[0]) for e in mine)
        assert np.array_equal(ids[:used], np.concatenate([e[0] for e in mine]))
        assert np.array_equal(labels[:used], np.concatenate([e[1] for e in mine]))
        assert ids[0] == tokenizer.bos_id and not ids[used:].any() and (labels[used:] == IGNORE_INDEX).all()
    # Greedy: the first chat of the next row would not have fitted in this one.
    for r in range(source.rows_per_epoch - 1):
        assert len(source.rows[r + 1]) and (source.lengths[source.rows[r]].sum() + source.lengths[source.rows[r + 1][0]]
                                            > 257)
    assert source.padding_share == pytest.approx(1 - sum(map(len, seen)) / (257 * source.rows_per_epoch))
    assert source.steps_per_epoch == -(-source.rows_per_epoch // 4)
    # Each epoch visits the rows in its own seeded order.
    assert sorted(source.order(0)) == list(range(source.rows_per_epoch))
    assert not np.array_equal(source.order(0), source.order(1))
    batch = next(source)
    assert set(batch) == {"tokens", "labels"} and batch["tokens"].shape == (4, 257)
    assert torch.equal(batch["tokens"][1], torch.from_numpy(rows[source.order(0)[1]][0]))
    assert bool(((batch["labels"] == IGNORE_INDEX) | (batch["labels"] == batch["tokens"])).all())
    # Rows run on into the next epoch's order: draw p holds rows [4p, 4p + 4).
    last = source.rows_per_epoch
    p = last // 4
    source.position = p
    assert torch.equal(next(source)["tokens"][last - 4 * p], torch.from_numpy(rows[source.order(1)[0]][0]))


def test_epochs_bound_the_stream_and_ranks_split_each_batch(examples) -> None:
    source = PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=0, epochs=2)
    assert len(list(source)) == source.total_steps == 2 * source.steps_per_epoch
    whole = PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=0)
    halves = [PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        both = [next(h) for h in halves]
        full = next(whole)
        assert torch.equal(torch.cat([b["tokens"] for b in both]), full["tokens"])
        assert torch.equal(torch.cat([b["labels"] for b in both]), full["labels"])


def test_the_stream_resumes_exactly(examples) -> None:
    first = PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=5)
    for _ in range(7):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # survives the checkpoint's json
    resumed = PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=5)
    resumed.load_state_dict(state)
    for _ in range(3):
        a, b = next(first), next(resumed)
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["labels"], b["labels"])
    with pytest.raises(ValueError, match="checkpoint has seq_len=256"):
        PackedSFTBatches(examples, batch_size=4, seq_len=300, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="examples differ"):
        PackedSFTBatches(examples[1:], batch_size=4, seq_len=256, seed=5).load_state_dict(state)


def test_bad_arguments_are_rejected(examples) -> None:
    with pytest.raises(ValueError, match="world_size"):
        PackedSFTBatches(examples, batch_size=3, seq_len=256, world_size=2)
    with pytest.raises(ValueError, match="seq_len >="):
        PackedSFTBatches(examples[:1], batch_size=1, seq_len=len(examples[0][0]) - 2)
    with pytest.raises(ValueError, match="equal length"):
        PackedSFTBatches([([1, 2, 3], [1, 2])], batch_size=1, seq_len=1)
    with pytest.raises(ValueError, match="epochs"):
        PackedSFTBatches(examples, batch_size=4, seq_len=256, epochs=0)
