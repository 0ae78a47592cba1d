"""DPO: the loss against hand computation, its value and gradient at the start (policy == reference),
the NLL-regularised variant, one optimizer step on a real batch, and a short run through the trainer."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from helpers import REFUSAL, chat_lm, write_data_dir
from minillama.chat import response_logprobs
from minillama.checkpoint import load_model, save_model
from minillama.data import RATING_LEVELS, Task
from minillama.data.preferences import Pair, save_pairs
from minillama.stages import dpo
from minillama.stages.dpo import DPOLoss, dpo_loss, run_dpo
from minillama.train.pairs import collate_pairs, encode_pairs


def save_lm(model, directory, tokenizer=None):
    """``model`` (and ``tokenizer``, as the SFT stage saves one beside its model) in ``directory``."""
    save_model(model, directory)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def _pairs(tasks):
    return [Pair(t.prompt, t.reference, REFUSAL, RATING_LEVELS[0], 0.75) for t in tasks]


def test_dpo_loss_is_log2_when_policy_equals_reference_and_its_gradient_favours_chosen():
    pc = torch.tensor([-12.0, -30.0, -7.5], requires_grad=True)
    pr = torch.tensor([-10.0, -31.0, -9.0], requires_grad=True)
    loss, metrics = dpo_loss(pc, pr, pc.detach(), pr.detach(), beta=0.1)
    assert float(loss.detach()) == pytest.approx(math.log(2))
    assert float(metrics["reward_margin"]) == 0 and float(metrics["reward_accuracy"]) == 0
    loss.backward()
    # d loss / d logp = -beta * sigmoid(0) / b for the chosen side, +beta / (2b) for the rejected.
    assert pc.grad.tolist() == pytest.approx([-0.1 * 0.5 / 3] * 3)
    assert pr.grad.tolist() == pytest.approx([0.1 * 0.5 / 3] * 3)


def test_dpo_loss_matches_the_formula():
    pc, pr = torch.tensor([-5.0, -8.0]), torch.tensor([-6.0, -4.0])
    rc, rr = torch.tensor([-5.5, -7.0]), torch.tensor([-5.0, -5.0])
    beta = 0.5
    logits = [beta * ((a - c) - (b - d)) for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())]
    expected = sum(math.log1p(math.exp(-z)) for z in logits) / 2
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(metrics["chosen_reward"]) == pytest.approx(beta * ((-5 + 5.5) + (-8 + 7)) / 2)
    assert float(metrics["reward_accuracy"]) == 0.5  # the first pair is ranked right, the second wrong
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_nll_variant_adds_alpha_times_the_chosen_nll_per_token():
    pc, pr = torch.tensor([-12.0, -30.0], requires_grad=True), torch.tensor([-10.0, -31.0])
    rc, rr = torch.tensor([-11.0, -29.0]), torch.tensor([-10.5, -30.0])
    tokens = torch.tensor([4.0, 10.0])
    plain, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    regularised, metrics = dpo_loss(pc, pr, rc, rr, beta=0.1, chosen_tokens=tokens, nll_alpha=0.7)
    nll = (12 / 4 + 30 / 10) / 2
    assert float(metrics["chosen_nll"]) == pytest.approx(nll)
    assert float((regularised - plain).detach()) == pytest.approx(0.7 * nll, rel=1e-6)
    (grad,) = torch.autograd.grad(regularised - plain, pc)
    assert grad.tolist() == pytest.approx([-0.7 / 4 / 2, -0.7 / 10 / 2])  # it raises the chosen logp
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(pc, pr, rc, rr, nll_alpha=0.5)
    with pytest.raises(ValueError, match="nll_alpha must be >= 0"):
        dpo_loss(pc, pr, rc, rr, chosen_tokens=tokens, nll_alpha=-1.0)


def test_one_step_on_a_real_batch_raises_chosen_and_lowers_rejected(world, tokenizer):
    torch.manual_seed(0)
    tasks = world.chat_tasks("train", 6, kinds=["fact_qa"])
    pairs = _pairs(tasks)
    policy = chat_lm(tokenizer, seed=4)
    loss_fn = DPOLoss(copy.deepcopy(policy), beta=0.1)
    batch = collate_pairs(encode_pairs(tokenizer, pairs, 256), tokenizer.pad_id)
    loss, metrics = loss_fn(policy, batch)
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-6) and metrics["count"] == 6
    prompts = [p.prompt for p in pairs]

    def logps():
        return (response_logprobs(policy, tokenizer, prompts, [p.chosen for p in pairs]),
                response_logprobs(policy, tokenizer, prompts, [p.rejected for p in pairs]))

    chosen0, rejected0 = logps()
    policy.train()
    loss.backward()
    assert all(p.grad is None for p in loss_fn.reference.parameters())  # the reference stays frozen
    with torch.no_grad():
        for p in policy.parameters():
            p -= 1.0 * p.grad
    chosen1, rejected1 = logps()
    assert float((chosen1 - chosen0).mean()) > 0 > float((rejected1 - rejected0).mean())


def test_oracle_pairs_match_the_best_samples_with_the_worst():
    samples = [["a", "b", "c", "d", "e"], ["x", "y", "z", "w"], ["same", "same2"]]
    scores = [[0.25, 1.0, 0.0, 0.5, 0.25], [1.0, 0.25, 0.25, 1.0], [0.5, 0.5]]
    pairs = dpo.oracle_pairs(["p", "q", "r"], samples, scores, per_prompt=2)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p", "b", "c"), ("p", "d", "e"),
                                                                ("q", "x", "z"), ("q", "w", "y")]
    assert [p.rating for p in pairs] == [RATING_LEVELS[0], RATING_LEVELS[2], RATING_LEVELS[0], RATING_LEVELS[0]]
    assert pairs[1].gap == 0.25  # the third prompt's samples tie: no pair
    assert len(dpo.oracle_pairs(["p"], samples[:1], scores[:1], per_prompt=1)) == 1


def test_clear_pairs_leave_out_unsure_pairs_and_draw_a_seeded_subset():
    pairs = [Pair(f"p{i}", "a", "b", RATING_LEVELS[i % 4], 0.0 if i % 4 == 3 else 0.25 * (3 - i % 4))
             for i in range(40)]
    clear = dpo.clear_pairs(pairs)
    assert len(clear) == 30 and all(p.rating != RATING_LEVELS[-1] for p in clear)
    some = dpo.clear_pairs(pairs, 12, seed=1)
    assert len(some) == 12 and some == dpo.clear_pairs(pairs, 12, seed=1) != dpo.clear_pairs(pairs, 12, seed=2)
    assert some == [p for p in clear if p in some]  # drawn, order kept
    assert dpo.clear_pairs(pairs, 99) == clear


def test_balance_risky_keeps_no_more_borderline_pairs_than_off_limits_ones():
    safety = {"u1": "unsafe", "u2": "unsafe", "c": "benign", **{f"b{i}": "borderline" for i in range(6)}}
    pairs = [Pair(prompt, "good", "bad", RATING_LEVELS[0], 0.75) for prompt in
             ["b0", "u1", "b1", "c", "b2", "b3", "u2", "b4", "c", "b5"]]
    kept = dpo.balance_risky(pairs, safety, seed=3)
    assert [p.prompt for p in kept if not p.prompt.startswith("b")] == ["u1", "c", "u2", "c"]  # untouched
    assert sum(p.prompt.startswith("b") for p in kept) == 2  # as many as the two off-limits pairs
    assert kept == [p for p in pairs if p in kept]  # order kept
    assert kept == dpo.balance_risky(pairs, safety, seed=3)
    assert len({tuple(p.prompt for p in dpo.balance_risky(pairs, safety, seed)) for seed in range(10)}) > 1  # a draw
    assert dpo.balance_risky(pairs[:2], safety) == pairs[:2]  # one borderline pair, one off-limits: both kept
    assert [p.prompt for p in dpo.balance_risky([pairs[0], pairs[3]], safety)] == ["c"]  # none off-limits
    with pytest.raises(ValueError, match="no safety class"):
        dpo.balance_risky([Pair("elsewhere", "a", "b", RATING_LEVELS[0], 0.75)], safety)


@pytest.mark.slow
@pytest.mark.integration
def test_run_dpo_trains_through_the_shared_trainer(tmp_path, world, tokenizer):
    torch.manual_seed(0)
    tasks = world.chat_tasks("train", 24, kinds=["fact_qa", "arithmetic"])
    save_pairs(tmp_path / "train.jsonl", _pairs(tasks[:16]))
    held_out = _pairs(tasks[16:])
    save_pairs(tmp_path / "val.jsonl", held_out)
    sft_dir = save_lm(chat_lm(tokenizer, seed=5), tmp_path / "sft")
    metrics = run_dpo(sft_dir, tokenizer, tmp_path / "dpo", pairs=[tmp_path / "train.jsonl"],
                      val_pairs=[tmp_path / "val.jsonl"], beta=0.5, nll_alpha=0.2, epochs=3, lr=3e-3, batch_size=8,
                      device="cpu", progress=False)
    assert metrics == json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert metrics["pairs"] == 16 and metrics["val_pairs"] == 8
    log = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert len(train) == 6 and train[0]["loss"] > train[-1]["loss"]
    assert train[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1: policy == reference
    assert log[-1]["kind"] == "val" and log[-1]["val_reward_accuracy"] == 1.0
    saved = load_model(tmp_path / "dpo" / "model")
    prompts = [p.prompt for p in held_out]
    reference = load_model(sft_dir)
    margin = [response_logprobs(m, tokenizer, prompts, [p.chosen for p in held_out])
              - response_logprobs(m, tokenizer, prompts, [p.rejected for p in held_out]) for m in (saved, reference)]
    assert bool((margin[0] > margin[1]).all())  # held-out refusals lost ground to the answers


@pytest.mark.slow
@pytest.mark.integration
def test_dpo_command_trains_on_pair_files_and_scores_with_the_oracle(tmp_path, world, tokenizer):
    data = write_data_dir(world, tmp_path / "data")
    tasks = [Task.from_dict(json.loads(line)) for line in (data / "chat_train.jsonl").open()]
    save_pairs(tmp_path / "pairs.jsonl", _pairs(tasks))
    sft = save_lm(chat_lm(tokenizer, seed=5), tmp_path / "sft", tokenizer)
    out = tmp_path / "dpo"
    assert dpo.main(["--sft", str(sft), "--pairs", str(tmp_path / "pairs.jsonl"), "--out", str(out), "--data",
                     str(data), "--eval-prompts", "2", "--batch-size", "2", "--nll-alpha", "0.1", "--device", "cpu",
                     "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pairs"] == 4 and metrics["nll_alpha"] == 0.1
    assert metrics["oracle"]["n_prompts"] == 4 and 0 <= metrics["oracle"]["combined"]["mean"] <= 1
    assert load_model(out / "model").config == load_model(sft).config


@pytest.mark.integration
def test_dpo_on_policy_pairs_come_from_a_rejection_rounds_samples(tmp_path, world, tokenizer):
    data = write_data_dir(world, tmp_path / "data", chat=4, safety=4)
    tasks = [Task.from_dict(json.loads(line)) for name in ("chat_train", "safety_train")
             for line in (data / f"{name}.jsonl").open()]
    rows = [{"prompt": t.prompt, "samples": [t.reference, REFUSAL, "no idea"],
             "oracle": [world.oracle.combined(t, r).score for r in (t.reference, REFUSAL, "no idea")],
             "reward": [0.0, 0.0, 0.0]} for t in tasks]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, by_class = dpo.on_policy_pairs(tmp_path / "samples.jsonl", {t.prompt: t.safety for t in tasks}, 1)
    assert all(p.chosen != p.rejected for p in pairs) and sum(by_class["trained"].values()) == len(pairs)
    assert by_class["trained"]["borderline"] <= by_class["trained"]["unsafe"]
    sft = save_lm(chat_lm(tokenizer, seed=5), tmp_path / "sft", tokenizer)
    metrics = run_dpo(sft, tokenizer, tmp_path / "dpo", samples=tmp_path / "samples.jsonl", data_dir=data,
                      pairs_per_prompt=1, batch_size=4, device="cpu", progress=False)
    assert metrics["pairs_by_class"] == by_class and metrics["pairs"] == len(pairs)
    assert json.loads((tmp_path / "dpo" / "pairs_by_class.json").read_text()) == by_class
    with pytest.raises(ValueError, match="one source of pairs"):
        run_dpo(sft, tokenizer, tmp_path / "x", samples=tmp_path / "samples.jsonl", pairs=[tmp_path / "p.jsonl"],
                data_dir=data)


def test_dpo_command_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        dpo.main(["--help"])
    assert exit_.value.code == 0 and "--nll-alpha" in capsys.readouterr().out
