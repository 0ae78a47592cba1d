"""Chapter 08 checks: ``top_k_filter`` and ``sample_token``.

Shapes: ``logits (b, v)``; ``sample_token`` returns ``(b,)`` int64 token ids. References:
:func:`minillama.generate.filter_logits` (``top_k``) and the distribution
:func:`minillama.generate.sample_next` draws from, ``softmax(filter(logits / temperature))``.

A learner may sample in any correct way (``torch.multinomial``, Gumbel-max, inverse CDF), so the
sampling checks compare frequencies over many seeded draws with the exact probabilities: within six
standard deviations plus twelve draws (the slack keeps rare tokens, whose counts are Poisson rather
than normal, from failing by chance), and exactly zero for a token of probability zero. A correct
sampler fails them with a probability of order 1e-7; the mistakes they are about move some
frequency by dozens of standard deviations. ``sample_token`` is
checked with the reference ``top_k_filter`` swapped in.
"""

from __future__ import annotations

from typing import Any

import torch

from ...generate import filter_logits
from ..check import Checks, Learner, expect_tensor, expect_tensor_like, fail, seeded

CHECKS = Checks()

DRAWS = 40_000  # rows of the same logits: one call gives DRAWS independent samples
ROW = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])  # probabilities 0.57 .. 0.004 at temperature 1


def reference_top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    return filter_logits(logits, top_k=k)


def _top_k(learner: Learner, logits: torch.Tensor, k: int) -> Any:
    top_k_filter = learner.function("top_k_filter")
    return top_k_filter(logits.clone(), k)


# ------------------------------------------------------------------ top_k_filter
@CHECKS.add(points=2, hint="find the k-th largest logit of each row (torch.topk(...).values[..., -1:]) and set "
                           "every logit below it to -inf; the kept logits stay exactly as they were")
def top_k_matches_reference(learner: Learner) -> None:
    logits = torch.randn(4, 50, generator=seeded(0)) * 2
    for k in (1, 5, 20):
        expect_tensor(_top_k(learner, logits, k), reference_top_k_filter(logits, k), f"top_k_filter(logits, {k})",
                      atol=0, rtol=0)


@CHECKS.add(points=1, hint="compare with the k-th largest value (logits < kth), so that tokens tied with it are "
                           "all kept rather than an arbitrary k of them")
def top_k_keeps_ties(learner: Learner) -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    for k in (2, 3):
        expect_tensor(_top_k(learner, logits, k), reference_top_k_filter(logits, k),
                      f"top_k_filter({logits.tolist()}, {k})", atol=0, rtol=0)


@CHECKS.add(points=1, hint="k may be larger than the vocabulary: use min(k, v), and keep every token")
def top_k_larger_than_vocabulary(learner: Learner) -> None:
    logits = torch.randn(2, 7, generator=seeded(1))
    for k in (7, 10):
        expect_tensor(_top_k(learner, logits, k), logits, f"top_k_filter(logits of 7 tokens, {k})", atol=0, rtol=0)


# ------------------------------------------------------------------ sample_token
def _sample(learner: Learner, logits: torch.Tensor, temperature: float, top_k: int | None = None,
            seed: int = 0) -> Any:
    sample_token = learner.function("sample_token")
    with learner.using_references(top_k_filter=reference_top_k_filter):
        return sample_token(logits.clone(), temperature, top_k, seeded(seed))


def _expect_ids(got: Any, b: int, what: str) -> torch.Tensor:
    expect_tensor_like(got, torch.zeros(b, dtype=torch.long), what)
    return got


def _expect_frequencies(got: Any, probs: torch.Tensor, what: str) -> None:
    """``got (n,)`` ids drawn from ``probs (v,)``: every frequency close to its probability."""
    ids = _expect_ids(got, DRAWS, what)
    v = probs.shape[0]
    if ids.min() < 0 or ids.max() >= v:
        fail(f"{what} drew ids outside [0, {v})")
    freq = torch.bincount(ids, minlength=v).double() / DRAWS
    probs = probs.double()
    tolerance = 6 * (probs * (1 - probs) / DRAWS).sqrt() + 12 / DRAWS
    tolerance[probs == 0] = 0.0  # a filtered-out token must never be drawn
    if ((freq - probs).abs() > tolerance).any():
        fail(f"{what}: frequencies {[round(x, 3) for x in freq.tolist()]} over {DRAWS} draws, expected "
             f"probabilities {[round(x, 3) for x in probs.tolist()]}")


@CHECKS.add(points=1, hint="temperature 0 means greedy: return logits.argmax(-1) (no division by zero)")
def sample_token_greedy_at_temperature_zero(learner: Learner) -> None:
    logits = torch.randn(5, 30, generator=seeded(2))
    expect_tensor(_sample(learner, logits, 0.0), logits.argmax(-1), "sample_token(logits, 0.0)", atol=0, rtol=0)


@CHECKS.add(points=2, hint="divide the logits by the temperature BEFORE the softmax, then draw from those "
                           "probabilities: T < 1 sharpens the distribution, T > 1 flattens it")
def sample_token_follows_the_temperature(learner: Learner) -> None:
    logits = ROW.expand(DRAWS, -1)
    for index, temperature in enumerate((1.0, 0.5, 2.0)):
        expected = (ROW / temperature).softmax(-1)
        _expect_frequencies(_sample(learner, logits, temperature, seed=10 + index), expected,
                            f"sample_token(logits, temperature={temperature})")


@CHECKS.add(points=1, hint="with top_k, filter the (temperature-scaled) logits with top_k_filter before the "
                           "softmax: the other tokens are never drawn, the kept ones keep their odds")
def sample_token_with_top_k(learner: Learner) -> None:
    logits = ROW.expand(DRAWS, -1)
    for k in (1, 3):
        expected = reference_top_k_filter(ROW[None], k)[0].softmax(-1)
        _expect_frequencies(_sample(learner, logits, 1.0, top_k=k, seed=20 + k), expected,
                            f"sample_token(logits, 1.0, top_k={k})")


@CHECKS.add(points=1, hint="draw with the generator you are given (torch.multinomial(probs, 1, "
                           "generator=generator)), so that the same seed gives the same tokens")
def sample_token_repeats_with_the_same_seed(learner: Learner) -> None:
    logits = torch.randn(200, 12, generator=seeded(3))
    first, again, other = (_sample(learner, logits, 1.0, seed=seed) for seed in (5, 5, 6))
    for got in (first, again, other):
        _expect_ids(got, 200, "sample_token(200 rows, 1.0, generator=...)")
    if not torch.equal(first, again):
        fail(f"two calls with generators seeded alike drew different tokens in "
             f"{int((first != again).sum())} of 200 rows")
    if torch.equal(first, other):
        fail("generators with different seeds drew the same 200 tokens: is the generator used?")
