"""Chapter 11 checks: ``combined_reward``, ``best_of_k``, ``reward_vs_k`` and ``choose_threshold``.

References: :func:`minillama.evaluate.rewards.combine_scores` (Llama 2's rule: the safety score where the
prompt is risky or the safety score is below the threshold, 0.15; the helpfulness score elsewhere),
:func:`minillama.stages.rejection.best_of_k`, :func:`minillama.stages.rejection.reward_vs_k` and
:func:`minillama.stages.rejection.choose_threshold` (its ``"threshold"``).

Shapes: ``helpfulness, safety, is_risky (n,)``; ``scores (n, K)``: ``n`` prompts, ``K`` samples each.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...data.oracle import SAFETY_THRESHOLD
from ...evaluate.rewards import combine_scores
from ...stages.rejection import best_of_k, choose_threshold, reward_vs_k
from ..check import Checks, Learner, expect_tensor, fail, seeded

CHECKS = Checks()


def _scores(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = seeded(seed)
    helpfulness, safety = torch.rand(n, generator=gen), torch.rand(n, generator=gen)
    return helpfulness, safety, torch.rand(n, generator=gen) < 0.3


def _combined(learner: Learner, helpfulness: torch.Tensor, safety: torch.Tensor, is_risky: torch.Tensor,
              threshold: float | None = None) -> Any:
    combined_reward = learner.function("combined_reward")
    args = (helpfulness.clone(), safety.clone(), is_risky.clone())
    return combined_reward(*args) if threshold is None else combined_reward(*args, threshold=threshold)


# ------------------------------------------------------------------ combined_reward
@CHECKS.add(points=2, hint="torch.where(is_risky | (safety < threshold), safety, helpfulness): the safety score "
                           "decides first, the helpfulness score only where the prompt is harmless and the answer safe")
def combined_reward_matches_reference(learner: Learner) -> None:
    for n, seed, threshold in ((50, 0, None), (64, 1, 0.3)):
        helpfulness, safety, risky = _scores(n, seed)
        expected = combine_scores(helpfulness, safety, risky, threshold or SAFETY_THRESHOLD)
        expect_tensor(_combined(learner, helpfulness, safety, risky, threshold), expected,
                      f"combined_reward({n} responses, {int(risky.sum())} risky prompts, threshold="
                      f"{threshold or SAFETY_THRESHOLD})", atol=0, rtol=0)


@CHECKS.add(points=1, hint="on a risky prompt (off-limits or borderline) the safety score is the reward, however "
                           "safe the answer: a safe refusal must beat a helpful leak")
def combined_reward_risky_prompts_read_safety(learner: Learner) -> None:
    helpfulness = torch.tensor([1.0, 0.875, 0.25, 0.625])  # exact in binary: the messages show them as written
    safety = torch.tensor([0.0, 1.0, 0.75, 0.125])
    risky = torch.ones(4, dtype=torch.bool)
    expect_tensor(_combined(learner, helpfulness, safety, risky), combine_scores(helpfulness, safety, risky),
                  f"combined_reward(helpfulness {helpfulness.tolist()}, safety {safety.tolist()}, all risky)",
                  atol=0, rtol=0)


@CHECKS.add(points=1, hint="on a harmless prompt the helpfulness score counts, unless the answer looks unsafe: "
                           "safety < threshold (0.15 by default) makes safety the reward")
def combined_reward_unsafe_answers_read_safety(learner: Learner) -> None:
    helpfulness = torch.tensor([0.875, 0.75, 0.375, 0.625, 0.5])
    safety = torch.tensor([0.0625, 0.125, 0.25, 0.875, 0.5])
    risky = torch.zeros(5, dtype=torch.bool)
    expect_tensor(_combined(learner, helpfulness, safety, risky), combine_scores(helpfulness, safety, risky),
                  f"combined_reward(helpfulness {helpfulness.tolist()}, safety {safety.tolist()}, none risky)",
                  atol=0, rtol=0)


@CHECKS.add(points=1, hint="the rule is safety < threshold, strictly: a safety score exactly at the threshold "
                           "counts as safe")
def combined_reward_at_the_threshold(learner: Learner) -> None:
    for threshold in (0.25, 0.5):  # exact in binary, so the comparison is the only question
        helpfulness, safety = torch.tensor([0.875, 0.375]), torch.tensor([threshold, threshold])
        risky = torch.zeros(2, dtype=torch.bool)
        expect_tensor(_combined(learner, helpfulness, safety, risky, threshold),
                      combine_scores(helpfulness, safety, risky, threshold),
                      f"combined_reward(safety == threshold == {threshold} on harmless prompts)", atol=0, rtol=0)


# ------------------------------------------------------------------ best_of_k
def _best(learner: Learner, scores: torch.Tensor) -> Any:
    best = learner.function("best_of_k")
    return best(scores.clone())


@CHECKS.add(points=1, hint="the index of the highest score in each row (over the K samples of a prompt, dim=-1), "
                           "as an int64 tensor (n,)")
def best_of_k_matches_reference(learner: Learner) -> None:
    for n, k, seed in ((6, 8, 2), (1, 1, 3), (20, 32, 4)):
        scores = torch.rand(n, k, generator=seeded(seed))
        expect_tensor(_best(learner, scores), best_of_k(scores), f"best_of_k(scores ({n}, {k}))", atol=0, rtol=0)


@CHECKS.add(points=1, hint="when several samples share the best score, keep the first of them (argmax does)")
def best_of_k_first_on_ties(learner: Learner) -> None:
    scores = torch.tensor([[0.25, 0.875, 0.875, 0.125], [0.5, 0.5, 0.5, 0.5], [0.0, 0.375, 0.125, 0.375]])
    expect_tensor(_best(learner, scores), best_of_k(scores), f"best_of_k({scores.tolist()})", atol=0, rtol=0)


# ------------------------------------------------------------------ reward_vs_k
def _curves(learner: Learner, scores: torch.Tensor, ks: list[int]) -> dict[str, list[float]]:
    reward_vs_k_ = learner.function("reward_vs_k")
    got = reward_vs_k_(scores.clone(), list(ks))
    if not isinstance(got, dict):
        fail(f"reward_vs_k returned {type(got).__name__}, expected a dict with 'k', 'max' and 'median'")
    missing = [key for key in ("k", "max", "median") if key not in got]
    if missing:
        fail(f"reward_vs_k's result has no {missing}; expected the keys 'k', 'max' and 'median'")
    return got


def _expect_curve(got: Any, expected: list[float], what: str) -> None:
    try:
        values = [float(x) for x in got]
    except (TypeError, ValueError):
        fail(f"{what} is {type(got).__name__}, expected a list of floats")
    if len(values) != len(expected):
        fail(f"{what} has {len(values)} values, expected {len(expected)}")
    for i, (a, b) in enumerate(zip(values, expected)):
        if not math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6):
            fail(f"{what}[{i}] is {a:.5g}, expected {b:.5g}")


@CHECKS.add(points=2, hint="for each k, the best of the FIRST k samples of every prompt (scores[:, :k].max(1)), "
                           "averaged over prompts; 'k' lists the ks used")
def reward_vs_k_max_curve(learner: Learner) -> None:
    scores = torch.rand(24, 16, generator=seeded(5))
    ks = [1, 2, 4, 8, 16]
    got, expected = _curves(learner, scores, ks), reward_vs_k(scores, ks)
    _expect_curve(got["k"], expected["k"], "reward_vs_k(scores (24, 16), ks)['k']")
    _expect_curve(got["max"], expected["max"], "reward_vs_k(scores (24, 16), [1, 2, 4, 8, 16])['max']")


@CHECKS.add(points=1, hint="the median of an even number of samples is the mean of the two middle ones "
                           "(np.median); torch.median returns the lower of the two")
def reward_vs_k_median_curve(learner: Learner) -> None:
    scores = torch.rand(24, 16, generator=seeded(6))
    ks = [1, 2, 3, 4, 8, 16]
    _expect_curve(_curves(learner, scores, ks)["median"], reward_vs_k(scores, ks)["median"],
                  f"reward_vs_k(scores (24, 16), {ks})['median']")


@CHECKS.add(points=1, hint="leave out every k larger than the number of samples per prompt: with 8 samples "
                           "there is no best of 32")
def reward_vs_k_skips_large_k(learner: Learner) -> None:
    scores = torch.rand(10, 8, generator=seeded(7))
    ks = [1, 4, 8, 16, 32]
    got, expected = _curves(learner, scores, ks), reward_vs_k(scores, ks)
    _expect_curve(got["k"], expected["k"], f"reward_vs_k(scores (10, 8), {ks})['k']")
    for key in ("max", "median"):
        if not hasattr(got[key], "__len__") or len(got[key]) != len(expected[key]):
            fail(f"reward_vs_k(scores (10, 8), {ks})[{key!r}] does not have {len(expected[key])} values, "
                 f"one per k kept")


# ------------------------------------------------------------------ choose_threshold
def _threshold(learner: Learner, rewards: torch.Tensor, truth: torch.Tensor, what: str) -> float:
    choose = learner.function("choose_threshold")
    got = choose(rewards.clone(), truth.clone())
    try:
        return float(got)
    except (TypeError, ValueError):
        fail(f"{what} returned {type(got).__name__}, expected one float (a reward level)")
    raise AssertionError("unreachable")


def _expect_level(learner: Learner, rewards: torch.Tensor, truth: torch.Tensor, what: str) -> None:
    expected = choose_threshold(rewards.numpy(), truth.numpy())["threshold"]
    got = _threshold(learner, rewards, truth, what)
    if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-7):
        fail(f"{what} is {got:.5g}, expected {expected:.5g}")


@CHECKS.add(points=2, hint="try every reward that occurs as the level; keep the one with the highest balanced "
                           "accuracy, (share of good samples at or above it + share of the others below it) / 2, "
                           "the lowest such level on a tie")
def choose_threshold_matches_reference(learner: Learner) -> None:
    for n, seed in ((64, 8), (200, 9)):
        gen = seeded(seed)
        truth = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0])[torch.randint(0, 5, (n,), generator=gen)]
        rewards = truth + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64).float()
        _expect_level(learner, rewards.double(), truth.double(), f"choose_threshold({n} noisy rewards)")


@CHECKS.add(points=1, hint="a sample whose reward equals the level is kept (reward >= level), so the level is "
                           "the reward of the lowest sample kept")
def choose_threshold_keeps_the_level(learner: Learner) -> None:
    rewards = torch.tensor([0.125, 0.25, 0.5, 0.75, 0.875], dtype=torch.float64)
    truth = torch.tensor([0.0, 0.2, 1.0, 1.0, 0.7], dtype=torch.float64)
    _expect_level(learner, rewards, truth, f"choose_threshold(rewards {rewards.tolist()}, truth {truth.tolist()})")


@CHECKS.add(points=1, hint="balanced accuracy, not accuracy: with few good samples, plain accuracy prefers a level "
                           "that keeps almost nothing, and rejection sampling would train on almost nothing")
def choose_threshold_is_balanced(learner: Learner) -> None:
    rewards = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9], dtype=torch.float64)
    truth = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    got = _threshold(learner, rewards, truth, "choose_threshold(10 samples, 2 of them good)")
    kept = int(((rewards >= got) & (truth >= 0.7)).sum())
    if kept < 2:  # the balanced level, 0.6, keeps both good samples; plain accuracy's, 0.85, one
        level = choose_threshold(rewards.numpy(), truth.numpy())["threshold"]
        fail(f"choose_threshold(10 samples, 2 of them good, at rewards 0.6 and 0.85) is {got:.5g}, which keeps "
             f"{kept} of the 2 good samples; the balanced level is {level:.5g}")


@CHECKS.add(points=1, hint="when every sample is good, or none is, there is nothing to tell apart: return the "
                           "lowest reward, which keeps everything")
def choose_threshold_nothing_to_separate(learner: Learner) -> None:
    rewards = torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64)
    for truth in (torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)):
        _expect_level(learner, rewards, truth, f"choose_threshold(rewards {rewards.tolist()}, truth {truth.tolist()})")
