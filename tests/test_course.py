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
        with torch.no_grad():
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
    copying = metrics["copying"]
    assert copying["n"] == 64 and copying["repeat_over_first"] == pytest.approx(
        copying["repeat_nats"] / copying["first_list_nats"])
    assert f"{copying['repeat_nats']:.2f} nats per token" in report
    # A second run finds every stage's output and redoes nothing.
    stamp = (out / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns
    assert course.main(argv) == 0
    assert (out / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((out / "eval" / "metrics.json").read_text()) == metrics


def metrics_vocab(out) -> int:
    return json.loads((out / "tokens" / "meta.json").read_text())["vocab_size"]


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
    from minillama.tokenizer import Tokenizer

    rng = np.random.default_rng(0)
    names = [name for name, _ in course.PEOPLE]
    lines = [f"{rng.choice(names)} wrote down: {', '.join(rng.choice(course.COPY_WORDS, 6))}. "
             f"{rng.choice(names)} repeated: it." for _ in range(400)]
    path = tmp_path_factory.mktemp("probe") / "text.txt"
    path.write_text("\n".join(lines))
    return Tokenizer.train(path, vocab_size=400)


def test_copying_probe_tells_a_copier_from_a_model_that_cannot_copy(probe_tokenizer) -> None:
    copier = course.copying_probe(InductionCopier(probe_tokenizer.vocab_size), probe_tokenizer, n=8)
    # Nothing to copy in the first list (ln V per token, or worse where three tokens recur);
    # the repeat costs little more than its first token.
    assert copier["first_list_nats"] >= math.log(probe_tokenizer.vocab_size) - 1e-4
    assert copier["repeat_over_first"] < 0.25
    untrained = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=4, vocab_size=probe_tokenizer.vocab_size,
                                  multiple_of=16, max_seq_len=128), seed=0)
    blind = course.copying_probe(untrained, probe_tokenizer, n=8)
    assert blind["repeat_over_first"] == pytest.approx(1.0, abs=0.05)
    assert course.copying_probe(untrained, probe_tokenizer, n=8) == blind  # seeded lists
    with pytest.raises(ValueError, match="length"):
        course.copying_probe(untrained, probe_tokenizer, length=len(course.COPY_WORDS) + 1)


def test_reward_model_table_shows_a_perfect_judges_ceiling_where_the_pairs_record_it() -> None:
    levels = {lvl: {"accuracy": 0.6, "n": 10, "ceiling": 1.0 if i < 3 else 0.5}
              for i, lvl in enumerate(course.RATING_LEVELS)}
    acc = {"accuracy": 0.6, "n": 40, "by_level": levels, "ceiling": 0.875}
    rows = course._accuracy_rows({"kind": "helpfulness", "margin": acc, "no_margin": acc})
    assert rows[-1] == "| helpfulness | a perfect judge | 87.5% | 100.0% | 100.0% | 100.0% | 50.0% |"
    old = {k: v for k, v in acc.items() if k != "ceiling"}  # metrics from before the flag
    assert len(course._accuracy_rows({"kind": "safety", "margin": old, "no_margin": old})) == 4


@pytest.mark.slow
def test_reward_stages_run_side_by_side_and_report_a_perfect_judge(tmp_path) -> None:
    out = tmp_path / "course"
    small = ["--set", "sft_examples=100", "--set", "rm_prompts=24", "--set", "rm_samples=2", "--set", "eval_chat=40",
             "--set", "eval_safety=20"]
    argv = ["--out", str(out), "--steps", "4", "--chars", "200000", "--no-progress", *small]
    assert course.main([*argv, "--until", "sft"]) == 0
    budget = {**course.BUDGETS["tiny"], "sft_examples": 100, "rm_prompts": 24, "rm_samples": 2}
    seconds = course.reward_stages_side_by_side(out, out / "data", budget, seed=0)
    assert set(seconds) == {"rm_helpfulness", "rm_safety"} and all(s > 0 for s in seconds.values())
    for kind in ("helpfulness", "safety"):
        metrics = json.loads((out / f"rm_{kind}" / "metrics.json").read_text())
        assert metrics["kind"] == kind and 0.5 < metrics["margin"]["ceiling"] <= 1.0
        assert metrics["margin"]["ceiling"] == metrics["no_margin"]["ceiling"]  # the same held-out pairs
    # The course finds both stages done and writes their rows, a perfect judge's included.
    assert course.main([*argv, "--until", "rm_safety"]) == 0
    report = (out / "report.md").read_text()
    assert "| helpfulness | a perfect judge |" in report and "| safety | a perfect judge |" in report
