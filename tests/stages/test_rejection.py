"""Rejection sampling: best-of-K selection, the reward-vs-K curves and the oracle's view of the
pick on synthetic arrays, one round with tiny models, fine-tuning on the kept answers, and a
two-round run that resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import chat_lm, chat_rm, write_data_dir
from minillama.chat import response_logprobs
from minillama.checkpoint import load_model, save_model
from minillama.evaluate.rewards import OracleJudge, RewardScorer, is_risky_prompt
from minillama.stages import rejection
from minillama.stages.rejection import (Kept, best_of_k, finetune_on_samples, merge_best, pick_quality,
                                        plot_reward_vs_k, reward_vs_k, sample_and_score, select_best)


def save_lm(model, directory, tokenizer=None):
    """``model`` (and ``tokenizer``, as the SFT stage saves one beside its model) in ``directory``."""
    save_model(model, directory)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


# ---------------------------------------------------------------------------------- synthetic arrays
def test_best_of_k_takes_each_rows_argmax_and_the_first_on_a_tie():
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.5, 0.2], [-1.0, -2.0, -0.5]])
    assert best_of_k(scores).tolist() == [1, 0, 2]
    assert best_of_k(np.array([[3.0]])).tolist() == [0]
    with pytest.raises(ValueError, match="scores must be"):
        best_of_k(torch.zeros(4))


def test_reward_vs_k_by_hand():
    scores = np.array([[0.2, 0.8, 0.4, 0.1], [0.6, 0.0, 1.0, 0.3]])
    curve = reward_vs_k(scores, ks=(1, 2, 4, 8))
    assert curve["k"] == [1, 2, 4]  # 8 > 4 samples: left out
    assert curve["max"] == pytest.approx([(0.2 + 0.6) / 2, (0.8 + 0.6) / 2, (0.8 + 1.0) / 2])
    assert curve["median"] == pytest.approx([(0.2 + 0.6) / 2, (0.5 + 0.3) / 2, (0.3 + 0.45) / 2])
    with pytest.raises(ValueError, match="exceeds"):
        reward_vs_k(scores, ks=(8, 16))
    with pytest.raises(ValueError, match="ks must be >= 1"):
        reward_vs_k(scores, ks=(0, 2))


def test_max_reward_never_falls_with_k_while_the_median_stays_flat():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(500, 32)) + rng.normal(size=(500, 1))  # a prompt effect plus sample noise
    curve = reward_vs_k(scores)
    assert curve["k"] == [1, 2, 4, 8, 16, 32]
    assert all(b >= a for a, b in zip(curve["max"], curve["max"][1:]))
    assert curve["max"][-1] - curve["max"][0] > 1.5  # E[max of 32 normals] ~ 2.0
    assert max(curve["median"]) - min(curve["median"]) < 0.15
    assert all(m <= x for m, x in zip(curve["median"], curve["max"]))


def test_pick_quality_shows_what_reward_model_errors_cost():
    rng = np.random.default_rng(1)
    truth = rng.random((200, 16))
    perfect = pick_quality(truth, truth, ks=(1, 4, 16))
    assert perfect["oracle_of_rm_pick"] == pytest.approx(perfect["oracle_best"])
    inverted = pick_quality(-truth, truth, ks=(1, 4, 16))
    assert inverted["oracle_of_rm_pick"][-1] == pytest.approx(truth.min(1).mean())
    noisy = pick_quality(truth + rng.normal(scale=0.3, size=truth.shape), truth, ks=(1, 4, 16))
    assert noisy["oracle_of_rm_pick"][0] == pytest.approx(noisy["oracle_best"][0])  # K=1: nothing to pick
    gaps = [b - p for b, p in zip(noisy["oracle_best"], noisy["oracle_of_rm_pick"])]
    assert 0 < gaps[1] < gaps[2]  # the noisier the judge relative to the spread, the more it gives away
    assert noisy["oracle_mean"][-1] == pytest.approx(truth.mean())
    with pytest.raises(ValueError, match="both be"):
        pick_quality(truth[:, :4], truth)


def test_reward_vs_k_plot_is_written(tmp_path):
    rng = np.random.default_rng(2)
    rm, truth = rng.random((10, 8)), rng.random((10, 8))
    study = {"temperatures": {t: {**reward_vs_k(rm * s, (1, 2, 4, 8)), **pick_quality(rm, truth, (1, 2, 4, 8))}
                              for t, s in (("0.7", 0.8), ("1", 1.0))}}
    plot_reward_vs_k(study, tmp_path / "reward_vs_k.png")
    assert (tmp_path / "reward_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_best_keeps_the_higher_score_per_prompt():
    old = {"a": Kept("a", "old a", 0.5), "b": Kept("b", "old b", 0.9)}
    merged = merge_best(old, [Kept("a", "new a", 0.7), Kept("b", "new b", 0.2), Kept("c", "new c", 0.1)])
    assert merged == {"a": Kept("a", "new a", 0.7), "b": Kept("b", "old b", 0.9), "c": Kept("c", "new c", 0.1)}
    assert old["a"].response == "old a"  # the input is not changed


# ---------------------------------------------------------------------------------- with models
@pytest.fixture(scope="module")
def scorer(tokenizer):
    return RewardScorer(chat_rm(tokenizer, seed=1, head_std=20.0), chat_rm(tokenizer, seed=2, head_std=20.0),
                        tokenizer)


def test_a_round_keeps_the_sample_with_the_best_combined_reward(world, tokenizer, scorer):
    tasks = world.chat_tasks("train", 3, kinds=["fact_qa"]) + world.unsafe_tasks("train", 2, borderline=0.0)
    policy = chat_lm(tokenizer, seed=6)
    samples, scores = sample_and_score(policy, tokenizer, scorer, tasks, k=4, temperature=1.0, seed=3,
                                       max_new_tokens=6)
    kept = select_best(tasks, samples, scores)
    assert scores.shape == (5, 4) and len({s for row in samples for s in row}) > 5
    for task, row, row_scores, best in zip(tasks, samples, scores, kept):
        recomputed = scorer.combined([task.prompt] * 4, row, [is_risky_prompt(task)] * 4)
        assert torch.equal(recomputed, row_scores)
        assert best.prompt == task.prompt and best.score == float(row_scores.max())
        assert best.response == row[int(row_scores.argmax())]
    again = sample_and_score(policy, tokenizer, scorer, tasks, k=4, temperature=1.0, seed=3, max_new_tokens=6)
    assert again[0] == samples and torch.equal(again[1], scores)


def test_finetuning_on_kept_answers_makes_them_likelier(tmp_path, world, tokenizer):
    torch.manual_seed(0)
    tasks = world.chat_tasks("train", 8, kinds=["fact_qa"])
    kept = [Kept(t.prompt, t.reference, 1.0) for t in tasks]
    policy = chat_lm(tokenizer, seed=7)
    prompts, answers = [k.prompt for k in kept], [k.response for k in kept]
    before = response_logprobs(policy, tokenizer, prompts, answers)
    finetune_on_samples(policy, tokenizer, kept, tmp_path / "train", epochs=4, lr=3e-3, batch_size=2, seq_len=64,
                        device="cpu", progress=False)
    after = response_logprobs(policy, tokenizer, prompts, answers)
    assert float((after - before).mean()) > 1.0
    assert (tmp_path / "train" / "metrics.jsonl").is_file()


def _kept_scores(path):
    return {k["prompt"]: k["score"] for k in map(json.loads, path.read_text().splitlines())}


def test_rejection_prompts_take_a_set_share_of_safety_tasks(tmp_path, world):
    data = write_data_dir(world, tmp_path / "data", chat=12, safety=6)
    safety = {json.loads(line)["prompt"] for line in (data / "safety_train.jsonl").read_text().splitlines()}
    prompts = rejection.rejection_prompts(data, 9, safety_share=1 / 3, seed=0)
    assert len(prompts) == 9 and sum(t.prompt in safety for t in prompts) == 3
    assert prompts == rejection.rejection_prompts(data, 9, safety_share=1 / 3, seed=0)
    assert not any(t.prompt in safety for t in rejection.rejection_prompts(data, 6, safety_share=0.0))
    with pytest.raises(ValueError, match="safety_share"):
        rejection.rejection_prompts(data, 6, safety_share=1.5)


@pytest.mark.slow
@pytest.mark.integration
def test_two_rounds_write_their_files_and_a_rerun_resumes(tmp_path, world, tokenizer):
    torch.manual_seed(0)
    data = write_data_dir(world, tmp_path / "data")
    sft = save_lm(chat_lm(tokenizer, seed=8), tmp_path / "sft")
    rms = [save_model(chat_rm(tokenizer, seed=s), tmp_path / f"rm{s}") for s in (1, 2)]
    kwargs = dict(rounds=2, k=2, n_prompts=5, epochs=1, lr=1e-3, batch_size=2, max_new_tokens=6, eval_prompts=3,
                  eval_safety=2, device="cpu", progress=False)
    report = rejection.run_rejection(sft, rms, tokenizer, data, tmp_path / "rs", **kwargs)
    assert [m["round"] for m in report["rounds"]] == [1, 2] and report["sft"]["n_prompts"] == 5
    for r in (1, 2):
        round_dir = tmp_path / "rs" / f"round_{r}"
        samples = [json.loads(line) for line in (round_dir / "samples.jsonl").read_text().splitlines()]
        kept = [json.loads(line) for line in (round_dir / "kept.jsonl").read_text().splitlines()]
        assert len(samples) == 5 and all(len(s["samples"]) == 2 == len(s["oracle"]) for s in samples)
        assert len(kept) == 5
        assert sum(sum(row.values()) for row in report["rounds"][r - 1]["kept_labels"].values()) == 5
        load_model(round_dir / "model")
    # Round 2 keeps, per prompt, the better of round 1's best and its own.
    first, second = (_kept_scores(tmp_path / f"rs/round_{r}/kept.jsonl") for r in (1, 2))
    assert all(second[p] >= first[p] for p in first)
    assert (tmp_path / "rs" / "rounds.png").is_file()
    stamp = (tmp_path / "rs/round_2/metrics.json").stat().st_mtime_ns
    assert rejection.run_rejection(sft, rms, tokenizer, data, tmp_path / "rs", **kwargs) == report
    assert (tmp_path / "rs/round_2/metrics.json").stat().st_mtime_ns == stamp


def test_kept_labels_count_what_the_oracle_calls_each_kept_answer(world):
    chat = world.chat_tasks("val", 3)
    off_limits, borderline = world.unsafe_tasks("val", 1, borderline=0.0)[0], world.unsafe_tasks("val", 1, 1.0)[0]
    refusal = "I'm sorry, but I can't help with that."
    kept = [Kept(chat[0].prompt, chat[0].reference, 1.0), Kept(chat[1].prompt, refusal, 0.2),
            Kept(chat[2].prompt, "", 0.1), Kept(off_limits.prompt, refusal, 0.9),
            Kept(borderline.prompt, borderline.reference, 0.8)]
    tasks = [*chat, off_limits, borderline]
    assert rejection.kept_labels(world.oracle, tasks, kept) == {
        "benign": {"correct": 1, "false_refusal": 1, "malformed": 1},
        "borderline": {"correct": 1}, "unsafe": {"proper_refusal": 1}}
    assert rejection.oracle_label(world.oracle, off_limits, off_limits.compliance) == "unsafe_compliance"
    assert rejection.oracle_label(world.oracle, borderline, refusal) == "false_refusal"


@pytest.mark.integration
def test_rejection_command_runs_the_reward_vs_k_study(tmp_path, world, tokenizer):
    data = write_data_dir(world, tmp_path / "data")
    sft = save_lm(chat_lm(tokenizer, seed=8), tmp_path / "sft", tokenizer)
    rms = [save_model(chat_rm(tokenizer, seed=s), tmp_path / f"rm{s}" / "model") for s in (1, 2)]
    out = tmp_path / "study"
    assert rejection.main(["--sft", str(sft), "--rm-helpfulness", str(tmp_path / "rm1"), "--rm-safety", str(rms[1]),
                           "--data", str(data), "--out", str(out), "--rounds", "0", "--study-prompts", "2",
                           "--study-k", "4", "--study-temperatures", "0.8", "1.2", "--max-new-tokens", "4",
                           "--device", "cpu", "--no-progress"]) == 0
    assert not (out / "metrics.json").exists()  # no rounds: the study alone
    study = json.loads((out / "reward_vs_k.json").read_text())
    assert study["prompts"] == 3 and sorted(study["temperatures"]) == ["0.8", "1.2"]  # 2 chat + 1 safety
    for curve in study["temperatures"].values():
        assert curve["k"] == [1, 2, 4] and curve["max"] == sorted(curve["max"])
        assert all(p <= b + 1e-12 for p, b in zip(curve["oracle_of_rm_pick"], curve["oracle_best"]))
    assert (out / "reward_vs_k.png").is_file()


def test_rejection_command_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        rejection.main(["--help"])
    assert exit_.value.code == 0 and "--rm-safety" in capsys.readouterr().out


def test_the_oracle_judge_scores_like_the_oracle_and_checks_lengths(world):
    tasks = world.chat_tasks("val", 3) + world.unsafe_tasks("val", 2, borderline=0.0)
    oracle = world.oracle
    answers = [t.reference for t in tasks] + ["I can't help with that."] * len(tasks)
    prompts = [t.prompt for t in tasks] * 2
    judge = OracleJudge(oracle)
    scores = judge.combined(prompts, answers, [is_risky_prompt(oracle.task(p)) for p in prompts])
    assert scores.tolist() == pytest.approx([oracle.combined(p, a).score for p, a in zip(prompts, answers)])
    assert scores[:len(tasks)].tolist() == [1.0] * len(tasks)  # the references are perfect
    with pytest.raises(ValueError, match="same length"):
        judge.combined(prompts, answers[:-1])


@pytest.mark.integration
def test_rejection_command_with_the_oracle_as_judge_needs_no_reward_models(tmp_path, world, tokenizer):
    data = write_data_dir(world, tmp_path / "data")
    sft = save_lm(chat_lm(tokenizer, seed=8), tmp_path / "sft", tokenizer)
    argv = ["--sft", str(sft), "--data", str(data), "--out", str(tmp_path / "rs"), "--rounds", "1", "--k", "2",
            "--prompts", "3", "--batch-size", "2", "--max-new-tokens", "4", "--eval-prompts", "2", "--eval-safety",
            "1", "--device", "cpu", "--no-progress"]
    with pytest.raises(SystemExit):  # the recipe's judge needs both reward models
        rejection.main(argv)
    assert rejection.main(argv + ["--judge", "oracle"]) == 0
    metrics = json.loads((tmp_path / "rs/round_1/metrics.json").read_text())
    assert metrics["judge"] == "oracle"
    row = json.loads((tmp_path / "rs/round_1/samples.jsonl").read_text().splitlines()[0])
    assert row["reward"] == pytest.approx(row["oracle"])  # the judge's scores are the oracle's
