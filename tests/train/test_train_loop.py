import json
import math

import pytest
import torch
import torch.nn.functional as F

from minillama.checkpoint import load_weights
from minillama.sequences import lm_loss
from minillama.train import NonFiniteLossError, Trainer, WindowBatches, latest_checkpoint, mean_over_batches
from minillama.train.plots import plot_losses

from train_helpers import ListBatches, new_model, train_config


def read_log(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out, kind="train", key="loss"):
    return [(r["step"], r[key]) for r in read_log(out) if r["kind"] == kind]


def make_trainer(out, windows, tokens, loss_fn=lm_loss, model_seed=0, **config):
    val_windows = WindowBatches(tokens[-500:], batch_size=4, seq_len=16, seed=1234)
    val_batches = [next(val_windows) for _ in range(2)]

    def val_fn(model):
        return mean_over_batches(model, lm_loss, val_batches)

    return Trainer(new_model(model_seed), loss_fn, windows(), train_config(**config), out, val_fn)


class Crash(Exception):
    pass


def crashing(after_calls):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Crash
        return lm_loss(model, batch)
    return loss_fn


def test_resume_after_a_crash_is_bit_exact(tmp_path, windows, tokens):
    whole = make_trainer(tmp_path / "whole", windows, tokens, eval_interval=6)
    whole.fit()

    # Crash in step 8 (2 micro-batches per step): step 7 is logged but the last checkpoint is step 6.
    crashed = make_trainer(tmp_path / "crashed", windows, tokens, loss_fn=crashing(14), eval_interval=6)
    with pytest.raises(Crash):
        crashed.fit()
    assert latest_checkpoint(tmp_path / "crashed").name == "step_00000006"
    assert [s for s, _ in losses(tmp_path / "crashed")] == list(range(1, 8))

    # A fresh process would build everything again; other initial weights prove they are loaded.
    resumed = make_trainer(tmp_path / "crashed", windows, tokens, model_seed=123, eval_interval=6)
    assert resumed.step == 6
    resumed.fit()
    for kind, key in (("train", "loss"), ("train", "grad_norm"), ("train", "lr"), ("val", "val_loss")):
        assert losses(tmp_path / "crashed", kind, key) == losses(tmp_path / "whole", kind, key)
    assert len(losses(tmp_path / "whole")) == 12 and len(losses(tmp_path / "whole", "val", "val_loss")) == 2
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))


def test_run_writes_log_plot_and_keeps_the_last_checkpoints(tmp_path, windows, tokens):
    out = tmp_path / "run"
    records = make_trainer(out, windows, tokens, steps=6, keep_last=1, checkpoint_interval=2).fit()
    assert [r["step"] for r in records if r["kind"] == "val"] == [4, 6]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000006"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    first = read_log(out)[0]
    assert first["tokens"] == 2 * 4 * 16 and first["count"] == 2 * 4 * 16 and first["tokens_per_s"] > 0
    assert first["lr"] == pytest.approx(3e-3 / 3)
    # Rerunning a finished run resumes at its end and does nothing.
    again = make_trainer(out, windows, tokens, steps=6)
    assert again.step == 6 and again.fit() == []


def test_training_learns_the_pattern(tmp_path, windows, tokens):
    records = make_trainer(tmp_path, windows, tokens, steps=40, lr=1e-2, grad_accum=1, eval_interval=40,
                           checkpoint_interval=40).fit()
    train = [r["loss"] for r in records if r["kind"] == "train"]
    assert train[0] == pytest.approx(math.log(64), abs=0.2)  # near uniform at the start
    assert sum(train[-5:]) / 5 < train[0] - 1.5
    assert records[-1]["val_loss"] < train[0] - 1.5


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tmp_path, windows, tokens):
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss, metrics = lm_loss(model, batch)
        return (loss * math.nan if calls["n"] == 9 else loss), metrics  # step 5, first micro-batch

    trainer = make_trainer(tmp_path, windows, tokens, loss_fn=poisoned, checkpoint_interval=2)
    with pytest.raises(NonFiniteLossError, match=r"step 5: the loss is nan.*step_00000004.* is kept") as err:
        trainer.fit()
    assert err.value.step == 5 and err.value.checkpoint.name == "step_00000004"
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    assert max(s for s, _ in losses(tmp_path)) == 4
    kept = new_model(seed=7)
    load_weights(kept, latest_checkpoint(tmp_path))
    # The poisoned step was not applied: the weights are the checkpoint's, all finite.
    assert all(torch.equal(a, b) for a, b in zip(kept.parameters(), trainer.model.parameters()))


def masked_loss(model, batch):
    """Loss on the targets whose mask is set: a different number in every micro-batch."""
    ids, mask = batch["ids"], batch["mask"]
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    logits = model(ids[:, :-1])
    total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    count = mask[:, 1:].sum()
    hits = ((logits.argmax(-1) == targets) & mask[:, 1:]).sum()
    return total / count, {"count": count, "tokens": ids[:, :-1].numel(), "accuracy": hits / count}


def test_accumulation_weights_micro_batches_by_their_token_counts(tmp_path, windows):
    source = windows(batch_size=4)
    gen = torch.Generator().manual_seed(0)
    full = []
    for _ in range(3):
        ids = next(source)["tokens"]
        mask = torch.rand(ids.shape, generator=gen) < torch.tensor([[0.9], [0.9], [0.2], [0.2]])
        full.append({"ids": ids, "mask": mask})
    halves = [{k: v[i:i + 2] for k, v in b.items()} for b in full for i in (0, 2)]
    config = dict(steps=3, grad_accum=1, eval_interval=0, checkpoint_interval=0, weight_decay=0.0)
    one = Trainer(new_model(), masked_loss, ListBatches(full), train_config(**config), tmp_path / "one").fit()
    two = Trainer(new_model(), masked_loss, ListBatches(halves), train_config(**{**config, "grad_accum": 2}),
                  tmp_path / "two").fit()
    for a, b in zip(one, two):
        assert a["count"] == b["count"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert b["accuracy"] == pytest.approx(a["accuracy"], rel=1e-6)  # a mean over counted tokens too
    # The halves' counts differ a lot, so a plain mean of their two losses would not match.
    model = new_model()
    plain = sum(masked_loss(model, h)[0].item() for h in halves[:2]) / 2
    assert abs(plain - one[0]["loss"]) > 1e-3


def test_plot_shows_train_loss_and_every_validation_loss(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 4.0 - s / 10, "lr": 1e-3} for s in range(1, 11)]
    records += [{"kind": "val", "step": s, "val_loss": 4.1 - s / 10, "val_ppl": 50.0} for s in (5, 10)]
    fig = plot_losses(records, tmp_path / "loss.png")
    lines = {line.get_label(): line.get_xydata().tolist() for line in fig.axes[0].get_lines()}
    assert set(lines) == {"train loss", "val loss"}  # val_ppl is not a loss: not drawn
    assert sum(lines["val loss"], []) == pytest.approx([5.0, 3.6, 10.0, 3.1])
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    plot_losses([], tmp_path / "empty.png")  # a run with no steps yet still gets a (blank) plot


def test_mean_over_batches_weighs_each_batch_by_its_count(tmp_path, windows):
    model, source = new_model(), windows(batch_size=4)
    batches = [next(source) for _ in range(3)]
    batches[1]["labels"] = batches[1]["tokens"].clone()
    batches[1]["labels"][:, :12] = -100  # a batch that counts far fewer targets
    with torch.no_grad():
        per_batch = [lm_loss(model, b) for b in batches]
    counts = [int(m["count"]) for _, m in per_batch]
    expected = sum(float(loss) * n for (loss, _), n in zip(per_batch, counts)) / sum(counts)
    assert mean_over_batches(model, lm_loss, batches) == {"val_loss": pytest.approx(expected, rel=1e-6)}
    assert abs(expected - sum(float(loss) for loss, _ in per_batch) / 3) > 1e-4  # a plain mean differs


def test_resuming_with_another_model_shape_is_refused(tmp_path, windows, tokens):
    make_trainer(tmp_path, windows, tokens, steps=3, checkpoint_interval=3).fit()
    with pytest.raises(ValueError, match=r"holds a different model.*'dim': \(32, 48\)"):
        Trainer(new_model(dim=48), lm_loss, windows(), train_config(steps=6), tmp_path)
    fresh = Trainer(new_model(dim=48), lm_loss, windows(), train_config(steps=6, resume=False), tmp_path)
    assert fresh.step == 0 and latest_checkpoint(tmp_path) is None  # the old attempt's checkpoints are gone
