"""SFT: labels cover exactly the answers, prompt positions get exactly zero gradient, packed and
alone the same answers are scored, and ``run_sft`` trains, writes its model and metrics, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import chat_lm
from minillama.chat import chat_example
from minillama.checkpoint import load_model, save_model
from minillama.data.files import main as data_main
from minillama.sequences import IGNORE_INDEX, lm_loss, pad_rows
from minillama.data.annotators import AnnotatorPool
from minillama.stages.sft import build_parser, packing_probe, run_sft, sft_examples
from minillama.train import mean_over_batches
from minillama.train.packing import PackedSFTBatches


@pytest.fixture
def tiny_model(tokenizer):
    """``tiny_model(seed=0, **overrides)``: a two-layer random chat model."""
    return lambda seed=0, **kw: chat_lm(tokenizer, seed, **{**dict(n_layers=2, n_heads=4, n_kv_heads=2,
                                                                     max_seq_len=384, init_std=0.1), **kw})


def padded_batches(examples, batch_size):
    """Each example alone in a right-padded row: what packing_probe builds for the chats of its rows."""
    out = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first:first + batch_size]
        tokens, mask = pad_rows([ids for ids, _ in chunk])
        out.append({"tokens": tokens, "labels": pad_rows([labels for _, labels in chunk], IGNORE_INDEX)[0],
                    "attention_mask": mask})
    return out


def sft_eval_loss(model, batches):
    return mean_over_batches(model, lm_loss, batches)["val_loss"]


@pytest.fixture(scope="module")
def tasks(world):
    return world.chat_tasks("train", 40) + world.unsafe_tasks("train", 10)


@pytest.fixture(scope="module")
def examples(tokenizer, tasks):
    return sft_examples(tokenizer, tasks)


def test_labels_are_the_answer_and_its_end(tokenizer, tasks, examples) -> None:
    for task, (ids, labels) in zip(tasks, examples):
        assert len(ids) == len(labels) and ids[0] == tokenizer.bos_id
        answer = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
        assert answer == tokenizer.encode(task.reference) + [tokenizer.end_id]
        assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))
        first = labels.index(answer[0])
        assert ids[first - 1] == tokenizer.role_id("assistant")  # everything up to the marker is masked
        assert all(label == IGNORE_INDEX for label in labels[:first])
    ids, labels = chat_example(tokenizer, "Say hi.", "Hi.", system="Be kind.")
    assert ids[1] == tokenizer.role_id("system")
    assert sum(label != IGNORE_INDEX for label in labels) == len(tokenizer.encode("Hi.")) + 1


class KeepLogits(nn.Module):
    """Runs the model and keeps its logits' gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs) -> torch.Tensor:
        self.logits = self.model(*args, **kwargs)
        self.logits.retain_grad()
        return self.logits


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
def test_only_answer_positions_get_gradient(tiny_model, examples, packed: bool) -> None:
    model = KeepLogits(tiny_model(seed=1).train())
    if packed:
        batch = next(PackedSFTBatches(examples, batch_size=3, seq_len=256, seed=0))
    else:
        batch = padded_batches(examples[:3], 3)[0]
    loss, metrics = lm_loss(model, batch)
    loss.backward()
    per_position = model.logits.grad.abs().sum(-1)  # (b, t)
    answer = batch["labels"][:, 1:] != IGNORE_INDEX  # position i is trained to predict token i + 1
    assert bool((per_position[~answer] == 0).all())  # exactly zero, not just small
    assert bool((per_position[answer] > 0).all())
    assert int(metrics["count"]) == int(answer.sum()) > 0
    assert metrics["tokens"] == batch["tokens"][:, :-1].numel()
    # The loss is the mean of -log p over the answer tokens, position by position.
    logp = model.logits.detach().log_softmax(-1)
    targets = batch["tokens"][:, 1:]
    manual = -logp.gather(-1, targets[..., None])[..., 0][answer].mean()
    torch.testing.assert_close(loss.detach(), manual)


def test_padded_examples_score_like_each_alone(tiny_model, examples) -> None:
    model = tiny_model(seed=2)
    together = sft_eval_loss(model, padded_batches(examples[:4], 4))
    with torch.no_grad():
        sums = [lm_loss(model, padded_batches([e], 1)[0]) for e in examples[:4]]
    manual = sum(float(loss) * int(m["count"]) for loss, m in sums) / sum(int(m["count"]) for _, m in sums)
    assert abs(together - manual) < 1e-5


def test_packing_probe_compares_the_same_answers(tiny_model, examples) -> None:
    source = PackedSFTBatches(examples, batch_size=4, seq_len=256, seed=0)
    packed, alone = packing_probe(source, 8, 4)
    assert len(packed) == 2 and sum(len(b["tokens"]) for b in alone) == sum(len(source.rows[r]) for r in range(8))
    packed_answers = [int(b["labels"][:, 1:].ne(IGNORE_INDEX).sum()) for b in packed]
    alone_answers = [int(b["labels"][:, 1:].ne(IGNORE_INDEX).sum()) for b in alone]
    assert 0 < sum(packed_answers) == sum(alone_answers)  # the same answer tokens, every chat whole
    model = tiny_model(seed=3)
    assert abs(sft_eval_loss(model, packed) - sft_eval_loss(model, alone)) < 1.0  # same tokens, other context


def test_cli_documents_every_flag() -> None:
    parser = build_parser()
    assert all(action.help for action in parser._actions)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0


@pytest.mark.slow
@pytest.mark.integration
def test_run_sft_trains_saves_and_resumes(tmp_path: Path, tokenizer, tiny_model) -> None:
    data = tmp_path / "data"
    assert data_main(["--out", str(data), "--chars", "20000", "--eval-chars", "4000", "--chat", "80",
                      "--eval-chat", "12", "--safety", "20", "--eval-safety", "8", "--quiet"]) == 0
    save_model(tiny_model(seed=0, max_seq_len=256), tmp_path / "init" / "model")
    kwargs = dict(batch_size=4, lr=3e-3, seq_len=256, eval_prompts=6, eval_safety=4, max_new_tokens=6,
                  checkpoint_interval=5, progress=False, val_rows=8)
    out = tmp_path / "sft"
    metrics = run_sft(tmp_path / "init", tokenizer, data, out, epochs=1, **kwargs)
    assert metrics["steps"] == metrics["steps_per_epoch"] > 5
    assert set(metrics["eval"]) == {"before", "after"}
    assert metrics["eval"]["after"]["n_prompts"] == 10
    assert json.loads((out / "sft_metrics.json").read_text())["steps"] == metrics["steps"]
    assert (out / "loss.png").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if r["kind"] == "train"]
    assert np.mean(train[-3:]) < np.mean(train[:3])  # it learns
    model = load_model(out / "model")
    assert model.config.vocab_size == tokenizer.vocab_size and (out / "model" / "tokenizer.model").is_file()
    # A second epoch continues from the checkpoint of the first and keeps the first run's "before".
    again = run_sft(tmp_path / "init", tokenizer, data, out, epochs=2, **kwargs)
    assert again["steps"] == 2 * metrics["steps"] and again["eval"]["before"] == metrics["eval"]["before"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, again["steps"] + 1))


def test_sft_examples_answer_with_the_annotators_demonstrations(tokenizer, world):
    tasks = world.chat_tasks("train", 40)
    pool = AnnotatorPool(uneven=0.6, seed=3)
    examples = sft_examples(tokenizer, tasks, annotators=pool)
    demos = pool.demonstrations(tasks)
    assert any(d.flaw for d in demos) and any(not d.flaw for d in demos)
    for (ids, labels), task, demo in zip(examples, tasks, demos):
        assert (ids, labels) == chat_example(tokenizer, task.prompt, demo.text)
    assert sft_examples(tokenizer, tasks[:3]) == [chat_example(tokenizer, t.prompt, t.reference) for t in tasks[:3]]
