import json

import numpy as np
import pytest
import torch

from minillama.train import WindowBatches, open_split, save_token_dataset, token_dtype, write_tokens
from minillama.train.data import BatchSource, open_tokens


def test_token_dtype_is_uint16_while_ids_fit_else_int32():
    assert token_dtype(2048) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.int32 and token_dtype(128256) == np.int32


@pytest.mark.parametrize("vocab_size", [300, 128256])
def test_token_files_round_trip(tmp_path, vocab_size):
    ids = np.random.default_rng(0).integers(0, vocab_size, size=1000)
    save_token_dataset(tmp_path, ids[:900], ids[900:], vocab_size, tokenizer="tok.model")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta == {"vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name, "train_tokens": 900,
                    "val_tokens": 100, "tokenizer": "tok.model"}
    assert (tmp_path / "train.bin").stat().st_size == 900 * token_dtype(vocab_size).itemsize
    train, val = open_split(tmp_path, "train"), open_split(tmp_path, "val")
    assert isinstance(train, np.memmap) and train.dtype == token_dtype(vocab_size)
    np.testing.assert_array_equal(train, ids[:900])
    np.testing.assert_array_equal(val, ids[900:])


def test_bad_ids_and_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=10"):
        write_tokens(tmp_path / "x.bin", [3, 10], vocab_size=10)
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="uint16"):
        open_tokens(tmp_path / "odd.bin", vocab_size=10)
    with pytest.raises(ValueError, match="meta.json"):
        open_split(tmp_path, "train")


def test_windows_are_contiguous_slices_and_shaped_b_t_plus_1(tokens, windows):
    source = windows(batch_size=3, seq_len=10)
    assert isinstance(source, BatchSource)
    batch = next(source)["tokens"]
    assert batch.shape == (3, 11) and batch.dtype == torch.int64
    for row, start in zip(batch.numpy(), source.starts(0)):
        np.testing.assert_array_equal(row, tokens[start:start + 11])


def test_same_seed_same_stream_other_seed_other_stream(windows):
    a, b, c = windows(seed=1), windows(seed=1), windows(seed=2)
    first = [next(a)["tokens"] for _ in range(3)]
    assert all(torch.equal(x, next(b)["tokens"]) for x in first)
    assert not torch.equal(first[0], next(c)["tokens"])
    assert not torch.equal(first[0], first[1])


def test_resume_from_state_continues_the_stream(windows):
    full = windows()
    expected = [next(full)["tokens"] for _ in range(5)]
    first = windows()
    for _ in range(2):
        next(first)
    resumed = windows(seed=0)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # survives JSON
    assert all(torch.equal(next(resumed)["tokens"], x) for x in expected[2:])


def test_ranks_split_the_global_batch_exactly(windows):
    whole = windows(batch_size=4)
    ranks = [windows(batch_size=4, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        assert torch.equal(next(whole)["tokens"], torch.cat([next(r)["tokens"] for r in ranks]))


def test_window_covering_the_whole_file(tokens):
    source = WindowBatches(tokens[:17], batch_size=2, seq_len=16)
    np.testing.assert_array_equal(next(source)["tokens"][1].numpy(), tokens[:17])


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=3, world_size=2), "divisible by world_size"),
    (dict(seq_len=5000), "seq_len \\+ 1"),
    (dict(rank=2, world_size=2), "rank must be in"),
])
def test_invalid_windows_name_the_problem(windows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        windows(**kwargs)


def test_resuming_with_other_settings_is_refused(windows):
    with pytest.raises(ValueError, match="seq_len"):
        windows(seq_len=8).load_state_dict(windows(seq_len=16).state_dict())
