"""Fixtures of the training tests (plain helpers live in train_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minillama.train import WindowBatches, save_token_dataset
from train_helpers import VOCAB, token_stream


@pytest.fixture
def tokens() -> np.ndarray:
    return token_stream(4000)


@pytest.fixture
def windows(tokens):
    return lambda **kw: WindowBatches(tokens, **{**dict(batch_size=4, seq_len=16, seed=0), **kw})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    stream = token_stream(6000)
    return save_token_dataset(tmp_path / "data", stream[:5000], stream[5000:], VOCAB, source="test pattern")
