"""SFT: labels cover exactly the answers, packing fills rows with the seeded epoch stream, the batch
source shards and resumes exactly, prompt positions get exactly zero gradient, and ``run_sft``
trains, writes its model and metrics, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from minillama.data.cli import main as data_main
from minillama.model import Llama
from minillama.post.sft import (IGNORE_INDEX, PackedSFTBatches, build_parser, chat_example, pack_whole,
                                packing_probe, padded_batches, run_sft, sft_eval_loss, sft_examples, sft_loss)


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
    loss, metrics = sft_loss(model, batch)
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
        sums = [sft_loss(model, padded_batches([e], 1)[0]) for e in examples[:4]]
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
def test_run_sft_trains_saves_and_resumes(tmp_path: Path, tokenizer, tiny_model) -> None:
    data = tmp_path / "data"
    assert data_main(["--out", str(data), "--chars", "20000", "--eval-chars", "4000", "--chat", "80",
                      "--eval-chat", "12", "--safety", "20", "--eval-safety", "8", "--quiet"]) == 0
    tokenizer.save(tmp_path / "tok")
    tiny_model(seed=0, max_seq_len=256).save_pretrained(tmp_path / "init" / "model")
    kwargs = dict(batch_size=4, lr=3e-3, seq_len=256, eval_prompts=6, eval_safety=4, max_new_tokens=6,
                  checkpoint_interval=5, progress=False, val_rows=8)
    out = tmp_path / "sft"
    metrics = run_sft(tmp_path / "init", tmp_path / "tok", data, out, epochs=1, **kwargs)
    assert metrics["steps"] == metrics["steps_per_epoch"] > 5
    assert set(metrics["eval"]) == {"before", "after"}
    assert metrics["eval"]["after"]["n_prompts"] == 10
    assert json.loads((out / "sft_metrics.json").read_text())["steps"] == metrics["steps"]
    assert (out / "loss.png").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if r["kind"] == "train"]
    assert np.mean(train[-3:]) < np.mean(train[:3])  # it learns
    model = Llama.from_pretrained(out / "model")
    assert model.config.vocab_size == tokenizer.vocab_size and (out / "model" / "tokenizer.model").is_file()
    # A second epoch continues from the checkpoint of the first and keeps the first run's "before".
    again = run_sft(tmp_path / "init", tmp_path / "tok", data, out, epochs=2, **kwargs)
    assert again["steps"] == 2 * metrics["steps"] and again["eval"]["before"] == metrics["eval"]["before"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, again["steps"] + 1))
