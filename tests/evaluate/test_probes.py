"""Probes of a pretrained model: the unigram baseline, continuation log-probabilities, and the
copying probe, which tells a model that copies from its context from one that cannot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_config
from minillama import Llama
from minillama.data.lexicon import PEOPLE
from minillama.evaluate.probes import COPY_WORDS, continuation_logprobs, copying_probe, unigram_cross_entropy
from minillama.tokenizer import Tokenizer


def test_unigram_cross_entropy_matches_direct_formula() -> None:
    train = np.array([0, 0, 1, 2, 2, 2])
    val = np.array([0, 2, 3])
    counts = np.array([2, 1, 3, 0]) + 1.0
    expected = -np.mean(np.log(counts[[0, 2, 3]] / counts.sum()))
    assert unigram_cross_entropy(train, val, vocab_size=4) == pytest.approx(expected)


def test_continuation_logprobs_equal_one_row_at_a_time() -> None:
    model = Llama(tiny_config(dim=32, n_layers=1, vocab_size=50, max_seq_len=32), seed=0).eval()
    prefixes = [[1, 5, 7], [1, 9], [1, 4, 4, 4]]
    conts = [[3], [8, 2, 6], [11, 12]]
    got = continuation_logprobs(model, prefixes, conts, pad_id=0, batch_size=2)
    for i, (p, c) in enumerate(zip(prefixes, conts)):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logp = F.log_softmax(model(ids)[0], -1)
        direct = sum(float(logp[len(p) + j - 1, tok]) for j, tok in enumerate(c))
        assert float(got[i]) == pytest.approx(direct, abs=1e-5)


class InductionCopier(torch.nn.Module):
    """A hand-written induction head: at every position, predict the token that followed the last
    earlier occurrence of the current three tokens (nothing where there is none)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab_size)
        for b, row in enumerate(ids.tolist()):
            for j in range(2, len(row)):
                match = next((k for k in range(j - 1, 1, -1) if row[k - 2:k + 1] == row[j - 2:j + 1]), None)
                if match is not None:
                    logits[b, j, row[match + 1]] = 10.0
        return logits


@pytest.fixture(scope="module")
def probe_tokenizer(tmp_path_factory):
    rng = np.random.default_rng(0)
    names = [name for name, _ in PEOPLE]
    lines = [f"{rng.choice(names)} wrote down: {', '.join(rng.choice(COPY_WORDS, 6))}. "
             f"{rng.choice(names)} repeated: it." for _ in range(400)]
    path = tmp_path_factory.mktemp("probe") / "text.txt"
    path.write_text("\n".join(lines))
    return Tokenizer.train(path, vocab_size=400)


def test_copying_probe_tells_a_copier_from_a_model_that_cannot_copy(probe_tokenizer) -> None:
    copier = copying_probe(InductionCopier(probe_tokenizer.vocab_size), probe_tokenizer, n=8)
    # Nothing to copy in the first list (ln V per token, or worse where three tokens recur);
    # the repeat costs little more than its first token.
    assert copier["first_list_nats"] >= math.log(probe_tokenizer.vocab_size) - 1e-4
    assert copier["repeat_over_first"] < 0.25
    untrained = Llama(tiny_config(dim=32, n_layers=1, vocab_size=probe_tokenizer.vocab_size, max_seq_len=128), seed=0)
    blind = copying_probe(untrained, probe_tokenizer, n=8)
    assert blind["repeat_over_first"] == pytest.approx(1.0, abs=0.05)
    assert copying_probe(untrained, probe_tokenizer, n=8) == blind  # seeded lists
    with pytest.raises(ValueError, match="length"):
        copying_probe(untrained, probe_tokenizer, length=len(COPY_WORDS) + 1)
