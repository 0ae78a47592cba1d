"""Reward models: the ranking loss and its margins, the oracle-labelled pair builder, the pair
batches, training on separable pairs, saving and loading, accuracy, and Llama 2's combined score."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import REFUSAL, chat_lm, chat_rm, write_data_dir
from minillama.checkpoint import load_model, save_model
from minillama.data import RATING_LEVELS, rating_level
from minillama.data.oracle import leaked
from minillama.data.preferences import Pair, load_pairs, pair_quality, preference_key, save_pairs
from minillama.evaluate.rewards import RewardScorer, combine_scores, is_risky_prompt, raw_rewards
from minillama.model import Llama, LlamaRewardModel
from minillama.stages import reward
from minillama.stages.reward import (MARGINS, RewardLoss, build_preference_pairs, margin_for, pair_accuracy,
                                     ranking_loss, reward_tasks, train_reward_model)
from minillama.train.pairs import PairBatches, collate_pairs, encode_pairs

SIGNIFICANT, BETTER, SLIGHT, NEGLIGIBLE = RATING_LEVELS


# ---------------------------------------------------------------------------------- the loss
def test_ranking_loss_is_minus_log_sigmoid_of_the_margin_reduced_gap():
    rc, rr = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    m = torch.tensor([1.0, 0.0, 1 / 3])
    expected = sum(math.log1p(math.exp(-(c - r - mm))) for c, r, mm in zip(rc.tolist(), rr.tolist(), m.tolist())) / 3
    assert float(ranking_loss(rc, rr, m)) == pytest.approx(expected, rel=1e-6)
    assert float(ranking_loss(rc, rr)) == pytest.approx(
        sum(math.log1p(math.exp(-(c - r))) for c, r in zip(rc.tolist(), rr.tolist())) / 3, rel=1e-6)


def test_a_margin_raises_the_loss_and_the_push_on_pairs_already_ranked_right():
    rc, rr = torch.tensor([1.0], requires_grad=True), torch.tensor([0.0])
    plain = ranking_loss(rc, rr, 0.0)
    (g_plain,) = torch.autograd.grad(plain, rc)
    with_margin = ranking_loss(rc, rr, 1.0)
    (g_margin,) = torch.autograd.grad(with_margin, rc)
    assert float(with_margin.detach()) > float(plain.detach())
    assert float(g_margin) < float(g_plain) < 0  # both raise r_chosen; the margin pushes harder


def test_ranking_loss_stays_finite_far_from_zero():
    loss = ranking_loss(torch.tensor([-500.0, 500.0]), torch.tensor([500.0, -500.0]))
    assert float(loss) == pytest.approx(500.0)


def test_margin_tables_are_llama2s_and_shrink_with_the_rating():
    assert [margin_for(level, "small") for level in RATING_LEVELS] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert [margin_for(level, "large") for level in RATING_LEVELS] == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="margins must be one of"):
        margin_for(SIGNIFICANT, "medium")
    with pytest.raises(ValueError, match="rating must be one of"):
        margin_for("much better", "small")
    assert set(MARGINS) == {"small", "large"}


# ---------------------------------------------------------------------------------- pairs
def _check_pair(oracle, task, pair, kind):
    """chosen outranks rejected on the oracle's axis, and the rating is the score gap's."""
    (sc, tc), (sr, tr) = (preference_key(oracle, task, text, kind) for text in (pair.chosen, pair.rejected))
    assert (sc, tc) >= (sr, tr)  # equal: an unsure call, ordered by a coin flip
    assert pair.unsure == ((sc, tc) == (sr, tr))
    assert pair.gap == pytest.approx(sc - sr)
    assert pair.rating == (rating_level(sc, sr) if sc != sr else NEGLIGIBLE)
    assert pair.quality == pair_quality(oracle, task, pair.chosen, pair.rejected, kind)


def test_helpfulness_pairs_cover_every_rating_level_evenly_and_are_right(oracle, chat_tasks, tokenizer):
    pairs = build_preference_pairs(None, tokenizer, oracle, chat_tasks, "helpfulness", max_pairs_per_task=4)
    by_task = defaultdict(list)
    for p in pairs:
        by_task[p.prompt].append(p)
        _check_pair(oracle, oracle.task(p.prompt), p, "helpfulness")
    assert set(by_task) == {t.prompt for t in chat_tasks}
    # The round-robin takes one pair of every level a task offers before a second of any.
    everything = build_preference_pairs(None, tokenizer, oracle, chat_tasks, "helpfulness", max_pairs_per_task=99)
    for prompt, task_pairs in by_task.items():
        offered = {p.rating for p in everything if p.prompt == prompt}
        assert len({p.rating for p in task_pairs}) == min(len(offered), len(task_pairs)), prompt
    counts = Counter(p.rating for p in pairs)
    assert set(counts) == set(RATING_LEVELS) and max(counts.values()) <= 1.5 * min(counts.values()), counts
    # Without the cap the levels are less even (the balance is the cap's).
    full = Counter(p.rating for p in everything)
    assert max(full.values()) / min(full.values()) > max(counts.values()) / min(counts.values()), (full, counts)


def test_ties_are_unsure_calls_in_either_order_unless_the_same_axis_separates_them(oracle, chat_tasks,
                                                                                   safety_tasks, tokenizer):
    # Helpfulness has no finer signal: two answers with the same score make an unsure pair (gap 0),
    # and the coin puts either side first; a gap below 0.25 is "negligibly better" but no coin flip.
    pairs = build_preference_pairs(None, tokenizer, oracle, chat_tasks, "helpfulness", max_pairs_per_task=99)
    negligible = [p for p in pairs if p.rating == NEGLIGIBLE]
    unsure = [p for p in negligible if p.unsure]
    assert unsure and all(p.gap == 0 for p in unsure)
    assert all(0 < p.gap < 0.25 for p in negligible if not p.unsure)
    for p in unsure:
        task = oracle.task(p.prompt)
        assert preference_key(oracle, task, p.chosen, "helpfulness") == preference_key(oracle, task, p.rejected,
                                                                                        "helpfulness")
    # Safety on an off-limits prompt has one: the reply that gives away less of the secret wins.
    risky = [t for t in safety_tasks if t.risky]
    pairs = build_preference_pairs(None, tokenizer, oracle, risky, "safety", max_pairs_per_task=99)
    ordered = [p for p in pairs if p.rating == NEGLIGIBLE
               and preference_key(oracle, oracle.task(p.prompt), p.chosen, "safety")
               != preference_key(oracle, oracle.task(p.prompt), p.rejected, "safety")]
    assert ordered
    for p in ordered:
        task = oracle.task(p.prompt)
        assert len(leaked(task, p.chosen)) < len(leaked(task, p.rejected))


def test_safety_pairs_prefer_refusing_off_limits_requests_and_answering_the_rest(oracle, safety_tasks, chat_tasks,
                                                                                    tokenizer):
    tasks = reward_tasks(chat_tasks, safety_tasks, "safety", 24)
    assert sum(t.safety == "benign" for t in tasks) == 8 and all(t in safety_tasks for t in tasks[:16])
    pairs = build_preference_pairs(None, tokenizer, oracle, tasks, "safety", max_pairs_per_task=6)
    for p in pairs:
        _check_pair(oracle, oracle.task(p.prompt), p, "safety")
    # The oracle's safety scores are 0, 0.5, 1: no gap of 0.25, so never "slightly better".
    assert {p.rating for p in pairs} == {SIGNIFICANT, BETTER, NEGLIGIBLE}
    for task in tasks:
        mine = [p for p in pairs if p.prompt == task.prompt]
        if task.risky:  # the polite refusal beats every complying response
            assert any(p.chosen == task.reference and p.rating == SIGNIFICANT for p in mine)
        else:  # a refusal of a harmless request is the worse side of every pair it is in
            assert all(oracle.safety(task, p.chosen).label == "safe" for p in mine)
            assert any(oracle.safety(task, p.rejected).label == "false_refusal" for p in mine)


def test_pairs_are_deterministic_include_model_samples_and_follow_the_seed(oracle, chat_tasks, tokenizer):
    model = chat_lm(tokenizer, seed=3)
    tasks = chat_tasks[:4]
    kwargs = dict(n_samples=2, temperature=1.0, max_pairs_per_task=8, max_new_tokens=8)
    first = build_preference_pairs(model, tokenizer, oracle, tasks, "helpfulness", seed=1, **kwargs)
    again = build_preference_pairs(model, tokenizer, oracle, tasks, "helpfulness", seed=1, **kwargs)
    other = build_preference_pairs(model, tokenizer, oracle, tasks, "helpfulness", seed=2, **kwargs)
    assert first == again and first != other
    offline = build_preference_pairs(None, tokenizer, oracle, tasks, "helpfulness", seed=1, max_pairs_per_task=8)
    known = {p.chosen for p in offline} | {p.rejected for p in offline}
    sampled = [p for p in first if p.chosen not in known or p.rejected not in known]
    assert sampled, "no pair uses a model sample"
    # Without samples (which follow the prompt's index), a task's pairs do not depend on its neighbours.
    offline_alone = build_preference_pairs(None, tokenizer, oracle, tasks[1:2], "helpfulness", seed=1,
                                           max_pairs_per_task=8)
    assert offline_alone == [p for p in offline if p.prompt == tasks[1].prompt]


def test_pair_builder_rejects_bad_arguments(oracle, chat_tasks, tokenizer):
    with pytest.raises(ValueError, match="kind must be one of"):
        build_preference_pairs(None, tokenizer, oracle, chat_tasks, "honesty")
    with pytest.raises(ValueError, match="max_pairs_per_task"):
        build_preference_pairs(None, tokenizer, oracle, chat_tasks, "safety", max_pairs_per_task=0)
    with pytest.raises(ValueError, match="Pair.rating"):
        Pair("p", "a", "b", "much better", 0.5)


def test_pairs_round_trip_through_jsonl(tmp_path, oracle, chat_tasks, tokenizer):
    pairs = build_preference_pairs(None, tokenizer, oracle, chat_tasks[:3], "helpfulness")
    save_pairs(tmp_path / "pairs.jsonl", pairs)
    assert load_pairs(tmp_path / "pairs.jsonl") == pairs


# ---------------------------------------------------------------------------------- batches
def _toy_pairs(tasks):
    """Separable pairs: the reference beats a refusal, whatever the prompt."""
    return [Pair(t.prompt, t.reference, REFUSAL, SIGNIFICANT, 0.75) for t in tasks]


def test_collate_puts_chosen_rows_first_right_padded_with_response_masks(chat_tasks, tokenizer):
    encoded = encode_pairs(tokenizer, _toy_pairs(chat_tasks[:3]), max_len=256)
    batch = collate_pairs(encoded, tokenizer.pad_id)
    assert batch["input_ids"].shape[0] == 6 and batch["rating"].tolist() == [RATING_LEVELS.index(SIGNIFICANT)] * 3
    for row, (ids, mask) in enumerate([e.chosen for e in encoded] + [e.rejected for e in encoded]):
        assert batch["input_ids"][row, :len(ids)].tolist() == ids
        assert batch["attention_mask"][row].sum() == len(ids)
        assert batch["response_mask"][row, :len(ids)].tolist() == mask
    response = batch["input_ids"][3][batch["response_mask"][3]].tolist()
    assert tokenizer.decode(response) == REFUSAL and response[-1] == tokenizer.end_id


def test_a_pair_longer_than_the_context_is_refused_by_its_length(tokenizer):
    long = Pair("one two three " * 40, "The answer is seven.", REFUSAL, SIGNIFICANT, 0.75)
    with pytest.raises(ValueError, match="a chat of [0-9]+ tokens is longer than the limit of 40 tokens"):
        encode_pairs(tokenizer, [long], max_len=40)


def test_pair_batches_cover_each_epoch_once_and_resume_exactly(chat_tasks, tokenizer):
    encoded = encode_pairs(tokenizer, _toy_pairs(chat_tasks[:10]), max_len=256)
    source = PairBatches(encoded, batch_size=4, seed=5)
    epoch = [next(source) for _ in range(3)]  # 10 pairs at 4 a batch: 3 batches (4, 4, 2)
    assert [b["rating"].shape[0] for b in epoch] == [4, 4, 2]
    chosen = [tuple(row[mask.bool()].tolist()) for b in epoch
              for row, mask in zip(b["input_ids"][:b["rating"].shape[0]], b["attention_mask"])]
    assert sorted(chosen) == sorted(tuple(e.chosen[0]) for e in encoded)  # every pair once per epoch
    state = source.state_dict()
    expected = [next(source)["input_ids"] for _ in range(3)]
    resumed = PairBatches(encoded, batch_size=4, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert all(torch.equal(next(resumed)["input_ids"], e) for e in expected)
    with pytest.raises(ValueError, match="batch_size"):
        PairBatches(encoded, batch_size=3, seed=5).load_state_dict(state)


@pytest.mark.parametrize("margins", ["small", "large", None])
def test_reward_loss_counts_pairs_and_matches_the_ranking_loss_with_its_margins(chat_tasks, tokenizer, margins):
    rm = chat_rm(tokenizer)
    pairs = [Pair(t.prompt, t.reference, REFUSAL, level, 0.75) for t, level in zip(chat_tasks, RATING_LEVELS)]
    batch = collate_pairs(encode_pairs(tokenizer, pairs, max_len=256), tokenizer.pad_id)
    with torch.no_grad():
        loss, metrics = RewardLoss(margins)(rm, batch)
        rewards = rm(batch["input_ids"], batch["attention_mask"])
    margin = torch.tensor([margin_for(p.rating, margins) if margins else 0.0 for p in pairs])
    assert metrics["count"] == 4 and metrics["tokens"] == int(batch["attention_mask"].sum())
    assert float(loss) == pytest.approx(float(ranking_loss(rewards[:4], rewards[4:], margin)), rel=1e-5)
    with pytest.raises(ValueError, match="margins must be None or one of"):
        RewardLoss("medium")


# ---------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_reward_model_learns_separable_pairs_and_round_trips(tmp_path, world, tokenizer):
    torch.manual_seed(0)
    tasks = world.chat_tasks("train", 48, kinds=["fact_qa", "arithmetic"])  # short prompts: fast steps
    train, held_out = _toy_pairs(tasks[:40]), _toy_pairs(tasks[40:])
    lm_dir = save_model(chat_lm(tokenizer, seed=1), tmp_path / "sft")
    before = pair_accuracy(LlamaRewardModel.from_lm(chat_lm(tokenizer, seed=1)), tokenizer, held_out)
    assert before["accuracy"] == 0.5  # a zero head: every pair a tie
    rm = train_reward_model(lm_dir, tokenizer, train, tmp_path / "rm", epochs=3, lr=3e-3, batch_size=8,
                            val_pairs=held_out, device="cpu", progress=False)
    after = pair_accuracy(rm, tokenizer, held_out)
    assert after["accuracy"] == 1.0 and after["by_level"][SIGNIFICANT]["n"] == 8
    log = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 16))
    assert log[-1]["kind"] == "val" and log[-1]["val_accuracy"] == 1.0
    loaded = load_model(tmp_path / "rm", kind=LlamaRewardModel)
    prompts, responses = [p.prompt for p in held_out], [p.chosen for p in held_out]
    assert torch.equal(raw_rewards(loaded, tokenizer, prompts, responses),
                       raw_rewards(rm, tokenizer, prompts, responses))


def test_loading_a_reward_model_names_what_is_wrong(tmp_path, tokenizer):
    good = save_model(chat_rm(tokenizer), tmp_path / "rm")
    weights = load_file(str(good / "model.safetensors"))

    def write(name, tensors):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text((good / "config.json").read_text())
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory

    missing = write("missing", {k: v for k, v in weights.items() if k != "score.weight"})
    with pytest.raises(ValueError, match="missing tensor.*score.weight"):
        load_model(missing)
    bad_shape = write("bad_shape", {**weights, "model.norm.weight": torch.ones(7)})
    with pytest.raises(ValueError, match="'model.norm.weight' has shape \\(7,\\)"):
        load_model(bad_shape)
    extra = write("extra", {**weights, "lm_head.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="unexpected tensor.*lm_head.weight"):
        load_model(extra)
    with pytest.raises(ValueError, match="holds a LlamaRewardModel, not a Llama"):
        load_model(good, kind=Llama)


def test_pair_accuracy_by_level_counts_ties_as_half(oracle, chat_tasks, tokenizer):
    pairs = build_preference_pairs(None, tokenizer, oracle, chat_tasks[:4], "helpfulness", max_pairs_per_task=4)
    rm = chat_rm(tokenizer, seed=2)
    result = pair_accuracy(rm, tokenizer, pairs)
    chosen = raw_rewards(rm, tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = raw_rewards(rm, tokenizer, [p.prompt for p in pairs], [p.rejected for p in pairs])
    assert result["accuracy"] == pytest.approx(float((chosen > rejected).float().mean()))
    assert set(result["by_level"]) == set(RATING_LEVELS) and sum(v["n"] for v in result["by_level"].values()) == 16
    assert sum(v["n"] for v in result["by_quality"].values()) == 16
    for quality, stats in result["by_quality"].items():
        rows = torch.tensor([p.quality == quality for p in pairs])
        right = (chosen[rows] > rejected[rows]).float().mean()
        assert stats["n"] == int(rows.sum()) and stats["accuracy"] == pytest.approx(float(right))
    with torch.no_grad():
        rm.score.weight.zero_()
    assert pair_accuracy(rm, tokenizer, pairs)["accuracy"] == 0.5


def test_pair_accuracy_ceiling_is_a_perfect_judges_expected_accuracy(oracle, chat_tasks, safety_tasks, tokenizer):
    # A perfect judge orders every pair the oracle can order and gets half of the coin flips.
    tasks = reward_tasks(chat_tasks, safety_tasks, "safety", 24)
    pairs = build_preference_pairs(None, tokenizer, oracle, tasks, "safety", max_pairs_per_task=6)
    flips = [p.unsure for p in pairs]
    assert any(flips) and not all(flips)
    # Unsure-level pairs that leak less of the secret are ordered by the oracle, not by a coin.
    assert any(p.rating == NEGLIGIBLE and not p.unsure for p in pairs)
    result = pair_accuracy(chat_rm(tokenizer, seed=2), tokenizer, pairs)
    assert result["ceiling"] == pytest.approx(1 - 0.5 * sum(flips) / len(pairs))
    for level, stats in result["by_level"].items():
        mine = [p.unsure for p in pairs if p.rating == level]
        assert stats["ceiling"] == pytest.approx(1 - 0.5 * sum(mine) / len(mine)), level
    assert result["by_level"][SIGNIFICANT]["ceiling"] == 1.0 and result["by_level"][NEGLIGIBLE]["ceiling"] < 1.0
    # The flag survives the jsonl round trip; files written before it load as ordered pairs.
    back = Pair.from_dict(json.loads(json.dumps(pairs[flips.index(True)].to_dict())))
    assert back.unsure
    old = {k: v for k, v in pairs[0].to_dict().items() if k != "unsure"}
    assert Pair.from_dict(old).unsure is False


# ---------------------------------------------------------------------------------- scoring
def test_combined_score_follows_llama2s_rule():
    helpfulness = torch.tensor([0.9, 0.9, 0.9, 0.2, 0.7, 0.7])
    safety = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.15, 0.149])
    risky = [False, False, True, True, False, False]
    combined = combine_scores(helpfulness, safety, risky)
    # unsafe answer (safety < 0.15) | safe, harmless prompt | risky prompt | risky | at the threshold | just below
    assert combined.tolist() == pytest.approx([0.1, 0.9, 0.5, 0.9, 0.7, 0.149])
    with pytest.raises(ValueError, match="same shape"):
        combine_scores(helpfulness, safety[:3], risky)


def test_reward_scorer_reads_both_models_through_a_sigmoid(chat_tasks, tokenizer):
    helpful_rm, safety_rm = chat_rm(tokenizer, seed=1, head_std=20.0), chat_rm(tokenizer, seed=2, head_std=20.0)
    scorer = RewardScorer(helpful_rm, safety_rm, tokenizer, batch_size=3)
    prompts = [t.prompt for t in chat_tasks[:5]]
    responses = [t.reference for t in chat_tasks[:5]]
    help_, safe = scorer.scores(prompts, responses)
    assert torch.allclose(help_, raw_rewards(helpful_rm, tokenizer, prompts, responses).sigmoid())
    assert torch.allclose(safe, raw_rewards(safety_rm, tokenizer, prompts, responses).sigmoid())
    risky = [True, False, False, True, False]
    assert torch.equal(scorer.combined(prompts, responses, risky), combine_scores(help_, safe, risky))
    assert is_risky_prompt(chat_tasks[0]) is False


@pytest.mark.slow
@pytest.mark.integration
def test_reward_command_builds_pairs_trains_and_reports(tmp_path, world, tokenizer):
    data = write_data_dir(world, tmp_path / "data")
    sft = save_model(chat_lm(tokenizer, seed=1), tmp_path / "sft" / "model")
    tokenizer.save(sft)  # as the SFT stage saves it beside its model
    out = tmp_path / "rm"
    argv = ["--kind", "helpfulness", "--sft", str(tmp_path / "sft"), "--data", str(data), "--out", str(out),
            "--prompts", "4", "--val-prompts", "3", "--samples", "1", "--max-new-tokens", "4", "--batch-size", "4",
            "--device", "cpu", "--no-progress"]
    assert reward.main(argv) == 0
    pairs = load_pairs(out / "pairs_train.jsonl")
    assert {p.prompt for p in pairs} == {json.loads(line)["prompt"] for line in (data / "chat_train.jsonl").open()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["margin"]["n"] == len(load_pairs(out / "pairs_val.jsonl")) and metrics["kind"] == "helpfulness"
    assert sum(metrics["train_pairs"].values()) == len(pairs) and "no_margin" not in metrics
    assert (out / "accuracy.png").is_file()
    assert load_model(out / "margin", kind=LlamaRewardModel).config == load_model(sft).config
    stamp = (out / "pairs_train.jsonl").stat().st_mtime_ns
    assert reward.main(argv) == 0  # a rerun reuses the pairs and the finished training
    assert (out / "pairs_train.jsonl").stat().st_mtime_ns == stamp


def test_reward_command_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        reward.main(["--help"])
    assert exit_.value.code == 0 and "--kind" in capsys.readouterr().out


def test_pair_quality_names_what_tells_two_answers_apart(oracle, chat_tasks):
    task = next(t for t in chat_tasks if t.form == "one_word")
    ref, name = task.reference, task.target[0]
    other = next(c for c in task.candidates if c != name)
    assert pair_quality(oracle, task, ref, f"{other.capitalize()}.", "helpfulness") == "content"
    assert pair_quality(oracle, task, ref, f"The answer is {name}.", "helpfulness") == "form"
    assert pair_quality(oracle, task, ref, f"{ref} {ref}", "helpfulness") == "clean"
    assert pair_quality(oracle, task, ref, f"The answer is {other}.", "helpfulness") == "several"
    assert pair_quality(oracle, task, ref, ref.lower(), "helpfulness") == "none"
    assert pair_quality(oracle, task, ref, "I can't help with that.", "safety") == "safety"
    # Pairs from a file written before the field existed still load.
    old = {"prompt": "p", "chosen": "a", "rejected": "b", "rating": NEGLIGIBLE, "gap": 0.0}
    assert Pair.from_dict(old).quality == ""
