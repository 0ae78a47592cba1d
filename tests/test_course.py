"""The course pipeline: its evaluation helpers against direct computations, and one short run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minillama import Llama, LlamaConfig
from minillama import course


def test_unigram_cross_entropy_matches_direct_formula() -> None:
    train = np.array([0, 0, 1, 2, 2, 2])
    val = np.array([0, 2, 3])
    counts = np.array([2, 1, 3, 0]) + 1.0
    expected = -np.mean(np.log(counts[[0, 2, 3]] / counts.sum()))
    assert course.unigram_cross_entropy(train, val, vocab_size=4) == pytest.approx(expected)


def test_continuation_logprobs_equal_one_row_at_a_time() -> None:
    model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=4, vocab_size=50, multiple_of=16, max_seq_len=32), seed=0).eval()
    prefixes = [[1, 5, 7], [1, 9], [1, 4, 4, 4]]
    conts = [[3], [8, 2, 6], [11, 12]]
    got = course.continuation_logprobs(model, prefixes, conts, pad_id=0, batch_size=2)
    for i, (p, c) in enumerate(zip(prefixes, conts)):
        ids = torch.tensor([p + c])
        logp = F.log_softmax(model(ids)[0], -1)
        direct = sum(float(logp[len(p) + j - 1, tok]) for j, tok in enumerate(c))
        assert float(got[i]) == pytest.approx(direct, abs=1e-5)


def test_documents_split_on_blank_lines(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("A b.\nC d.\n\n\nE f.\n\n")
    assert course.documents(path) == ["A b.\nC d.", "E f."]


@pytest.mark.slow
def test_course_runs_end_to_end_and_resumes(tmp_path) -> None:
    out = tmp_path / "course"
    # The language-model part (issue 5's pipeline); the post-training stages have their own tests.
    argv = ["--out", str(out), "--steps", "4", "--chars", "200000", "--no-progress", "--until", "eval"]
    assert course.main(argv) == 0
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert metrics["uniform_loss"] == pytest.approx(math.log(metrics_vocab(out)))
    assert 0.0 <= metrics["cloze"]["test"]["ranked"] <= 1.0 and metrics["cloze"]["test"]["n"] > 0
    assert "| validation loss" in report and "loss.png" in report and (out / "loss.png").is_file()
    # A second run finds every stage's output and redoes nothing.
    stamp = (out / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns
    assert course.main(argv) == 0
    assert (out / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((out / "eval" / "metrics.json").read_text()) == metrics


def metrics_vocab(out) -> int:
    return json.loads((out / "tokens" / "meta.json").read_text())["vocab_size"]
