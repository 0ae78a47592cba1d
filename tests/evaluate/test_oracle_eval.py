"""The oracle evaluation: bootstrap intervals cover the truth about 95% of the time, the paired
difference finds a real shift and not a null one, hand-written responses give the rates counted
by hand, and the stage table and json summary carry the numbers through."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpers import chat_lm
from minillama.chat import sample_responses
from minillama.evaluate.oracle import (win_rate, bootstrap_ci, evaluate_model, evaluate_responses, paired_difference,
                                     stage_table, summary)

REFUSAL = "I'm sorry, but I can't help with that."


def test_bootstrap_interval_covers_the_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(0)
    covered = []
    for repeat in range(300):
        values = (rng.random(200) < 0.3).astype(float)
        mean, lo, hi = bootstrap_ci(values, n_boot=400, seed=repeat)
        assert lo <= mean <= hi and mean == values.mean()
        covered.append(lo <= 0.3 <= hi)
    assert 0.9 <= np.mean(covered) <= 0.99


def test_bootstrap_interval_shrinks_and_skips_nan() -> None:
    rng = np.random.default_rng(1)
    _, lo_small, hi_small = bootstrap_ci(rng.random(100))
    _, lo_large, hi_large = bootstrap_ci(rng.random(1600))
    assert 0.15 < (hi_large - lo_large) / (hi_small - lo_small) < 0.35  # ~ 1/sqrt(16)
    assert bootstrap_ci([1.0, math.nan, 0.0, None])[0] == 0.5
    assert all(math.isnan(x) for x in bootstrap_ci([math.nan]))
    assert bootstrap_ci([1.0, 0.0], seed=3) == bootstrap_ci([1.0, 0.0], seed=3)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0)


def test_paired_difference_finds_a_real_shift_and_not_a_null_one() -> None:
    rng = np.random.default_rng(2)
    difficulty = rng.random(300)  # prompts differ far more than the two stages do
    a = np.clip(difficulty + rng.normal(0, 0.05, 300), 0, 1)
    better = np.clip(difficulty + 0.03 + rng.normal(0, 0.05, 300), 0, 1)
    mean, lo, hi = paired_difference(a, better)
    assert lo > 0 and lo < mean < hi
    _, a_lo, a_hi = bootstrap_ci(a)
    _, b_lo, b_hi = bootstrap_ci(better)
    assert b_lo < a_hi  # separately the intervals overlap: only the pairing sees the change
    nulls = []
    for repeat in range(100):  # two stages of equal quality, each run with its own noise
        first, second = np.clip(difficulty + rng.normal(0, 0.05, (2, 300)), 0, 1)
        _, lo, hi = paired_difference(first, second, n_boot=400, seed=repeat)
        nulls.append(lo <= 0 <= hi)
    assert np.mean(nulls) >= 0.88
    assert paired_difference([1.0, None, 0.0], [1.0, 1.0, math.nan])[0] == 0.0  # pairs missing a side drop out
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference([1.0, 0.0], [1.0])


@pytest.fixture(scope="module")
def graded(world):
    """Tasks with hand-written responses and what each should count as."""
    benign = world.chat_tasks("test", 12)
    risky = world.unsafe_tasks("test", 12, borderline=0.5)
    borderline = [t for t in risky if t.kind == "borderline"]
    unsafe = [t for t in risky if t.kind == "unsafe"]
    assert len(borderline) >= 3 and len(unsafe) >= 3
    groups = [
        (benign[:6], [t.reference for t in benign[:6]]),  # correct
        (benign[6:9], [REFUSAL] * 3),  # false refusals
        (benign[9:12], ["", "...", "?!"]),  # malformed
        (borderline[:2], [t.reference for t in borderline[:2]]),  # correct
        (borderline[2:3], [REFUSAL]),  # false refusal
        (unsafe[:2], [t.reference for t in unsafe[:2]]),  # proper refusals
        (unsafe[2:3], [unsafe[2].compliance]),  # unsafe compliance
    ]
    tasks = [t for group, _ in groups for t in group]
    responses = [r for _, group in groups for r in group]
    return tasks, responses


def test_hand_written_responses_give_the_hand_counted_rates(world, graded) -> None:
    tasks, responses = graded
    result = evaluate_responses(world.oracle, tasks, responses)
    assert result["n_prompts"] == 18
    harmless = 15  # 12 benign + 3 borderline
    assert result["helpful_accuracy"]["n"] == harmless and result["helpful_accuracy"]["mean"] == pytest.approx(8 / 15)
    # helpfulness scores: 8 correct in form (1.0), 4 refusals are "wrong", out of form, clean (0.2), 3 malformed (0)
    assert result["helpful_score"]["mean"] == pytest.approx((8 + 4 * 0.2) / 15)
    assert result["form_adherence"]["mean"] == pytest.approx(8 / 15)  # the references; refusals and "", "..." not
    assert result["clean"]["mean"] == pytest.approx(1.0)
    assert result["false_refusal"]["mean"] == pytest.approx(4 / 15)
    assert result["unsafe_compliance"]["n"] == 3 and result["unsafe_compliance"]["mean"] == pytest.approx(1 / 3)
    # combined: harmless prompts take the helpfulness score, off-limits ones the safety score (1, 1, 0)
    assert result["combined"]["mean"] == pytest.approx((8 + 4 * 0.2 + 0 + 1 + 1 + 0) / 18)
    for metric in ("helpful_accuracy", "false_refusal", "combined"):
        stat = result[metric]
        assert stat["lo"] <= stat["mean"] <= stat["hi"]
    assert result["by_kind"]["borderline"]["helpful_accuracy"]["mean"] == pytest.approx(2 / 3)
    assert set(result["by_kind"]["unsafe"]) == {"unsafe_compliance", "combined"}  # no "helpfulness" there
    per = result["per_prompt"]
    assert per["prompt"] == [t.prompt for t in tasks] and per["response"] == responses
    assert np.isnan(per["helpful_accuracy"][-3:]).all() and np.isnan(per["unsafe_compliance"][:15]).all()
    assert per["safety_label"][6:9] == ["false_refusal"] * 3 and per["helpful_label"][9:12] == ["malformed"] * 3


def test_stage_table_and_summary_carry_the_numbers(world, graded) -> None:
    tasks, responses = graded
    worse = evaluate_responses(world.oracle, tasks, [""] * len(tasks))
    better = evaluate_responses(world.oracle, tasks, responses)
    table = stage_table({"pretrained": worse, "sft": better})
    lines = table.splitlines()
    assert lines[0].startswith("| stage |") and len(lines) == 6
    assert lines[2].startswith("| pretrained | 18 | 0.000 [0.000, 0.000]")
    diff, lo, hi = paired_difference(worse["per_prompt"]["combined"], better["per_prompt"]["combined"])
    assert f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}] *" in lines[3]
    plain = summary(better)
    json.dumps(plain, allow_nan=False)  # NaN became null
    assert plain["per_prompt"]["unsafe_compliance"][0] is None
    from_json = paired_difference(summary(worse)["per_prompt"]["combined"], plain["per_prompt"]["combined"])
    assert from_json == (diff, lo, hi)
    assert "per_prompt" not in summary(better, per_prompt=False)
    other = evaluate_responses(world.oracle, tasks[:5], responses[:5])
    assert "(other prompts)" in stage_table({"a": better, "b": other})


def test_evaluate_model_scores_greedy_answers(world, tokenizer) -> None:
    model = chat_lm(tokenizer, seed=1, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=384, init_std=0.1)
    tasks = world.chat_tasks("val", 6, kinds=["arithmetic", "sort"]) + world.unsafe_tasks("val", 2)
    result = evaluate_model(model, tokenizer, world.oracle, tasks, max_new_tokens=8)
    responses = [r[0] for r in sample_responses(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=8)]
    assert result["per_prompt"]["response"] == responses
    expected = evaluate_responses(world.oracle, tasks, responses)
    assert result["combined"] == expected["combined"]
    assert result["sampling"]["responses"] == len(tasks)


def test_win_rate_counts_wins_ties_and_losses_by_prompt(world) -> None:
    tasks = world.chat_tasks("test", 4)
    refs = [t.reference for t in tasks]
    refusal = "I can't help with that."
    result = win_rate(world.oracle, tasks, refs[:2] + [refusal, refs[3]], [refusal, refs[1], refs[2], refusal])
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1)
    assert result["mean"] == pytest.approx(2.5 / 4) and result["n"] == 4
    assert result["lo"] <= result["mean"] <= result["hi"]
    with pytest.raises(ValueError, match="one length"):
        win_rate(world.oracle, tasks, refs, refs[:3])
