"""Chapter 10 checks: ``ranking_loss``, ``margin_for_rating`` and ``pair_accuracy_by_level``.

References: :func:`minillama.stages.reward.ranking_loss` (``mean(-log sigmoid(r_chosen - r_rejected -
margin))``), :func:`minillama.stages.reward.margin_for` (Llama 2's two margin tables,
:data:`~minillama.stages.reward.MARGINS`) and the rule of :func:`minillama.stages.reward.pair_accuracy`
(a pair is right when the chosen reward is higher, half right on a tie; one accuracy per rating
level that has pairs).

Shapes: ``r_chosen, r_rejected, margin (b,)``; ``ratings`` a list of ``b`` rating names.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...data.preferences import RATING_LEVELS
from ...stages.reward import MARGINS, margin_for, ranking_loss
from ..check import CheckFailed, Checks, Learner, expect_tensor, fail, seeded

CHECKS = Checks()


def reference_pair_accuracy_by_level(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                                     ratings: list[str]) -> dict[str, float]:
    right = (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
    out = {}
    for level in RATING_LEVELS:
        rows = torch.tensor([r == level for r in ratings])
        if rows.any():
            out[level] = float(right[rows].mean())
    return out


def _rewards(b: int, seed: int, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = seeded(seed)
    return torch.randn(b, generator=gen) * scale, torch.randn(b, generator=gen) * scale


# ------------------------------------------------------------------ ranking_loss
def _ranking(learner: Learner, chosen: torch.Tensor, rejected: torch.Tensor, margin: Any) -> Any:
    ranking_loss_ = learner.function("ranking_loss")
    margin = margin.clone() if isinstance(margin, torch.Tensor) else margin
    return ranking_loss_(chosen.clone(), rejected.clone(), margin)


@CHECKS.add(points=2, hint="the chosen reward must beat the rejected one by the margin: "
                           "mean(-logsigmoid(r_chosen - r_rejected - margin)); a larger margin means a larger loss")
def ranking_loss_matches_reference(learner: Learner) -> None:
    for b, seed in ((8, 0), (33, 1)):
        chosen, rejected = _rewards(b, seed)
        margin = torch.tensor([MARGINS["large"][i % 4] for i in range(b)])
        expect_tensor(_ranking(learner, chosen, rejected, margin), ranking_loss(chosen, rejected, margin),
                      f"ranking_loss(r_chosen ({b},), r_rejected ({b},), margin ({b},) from the large table)")
    chosen, rejected = _rewards(5, 2)
    expect_tensor(_ranking(learner, chosen, rejected, 1.0), ranking_loss(chosen, rejected, 1.0),
                  "ranking_loss(r_chosen (5,), r_rejected (5,), margin=1.0)")


@CHECKS.add(points=1, hint="with margin 0 it is the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected), "
                           "averaged over the pairs: small when the chosen reward is the larger one")
def ranking_loss_without_margin(learner: Learner) -> None:
    chosen, rejected = _rewards(16, 3)
    for margin, shown in ((0.0, "0.0"), (torch.zeros(16), "zeros (16,)")):
        expect_tensor(_ranking(learner, chosen, rejected, margin), ranking_loss(chosen, rejected),
                      f"ranking_loss(r_chosen (16,), r_rejected (16,), margin={shown})")


@CHECKS.add(points=1, hint="sigmoid(-200) is 0 in float32 and log(0) is -inf: use F.logsigmoid, which stays "
                           "finite (the loss is then about 200)")
def ranking_loss_stable_for_large_gaps(learner: Learner) -> None:
    chosen = torch.tensor([300.0, -200.0, 0.0, 120.0])
    rejected = torch.tensor([0.0, 0.0, 150.0, -1.0])
    expect_tensor(_ranking(learner, chosen, rejected, 0.0), ranking_loss(chosen, rejected),
                  "ranking_loss with reward gaps of +300, -200, -150, +121")


# ------------------------------------------------------------------ margin_for_rating
def _margin(learner: Learner, rating: str, margins: str | None) -> Any:
    margin_for_rating = learner.function("margin_for_rating")
    return margin_for_rating(rating) if margins is None else margin_for_rating(rating, margins)


@CHECKS.add(points=2, hint="the clearer the preference, the larger the margin: in RATING_LEVELS order the small "
                           "table is (1, 2/3, 1/3, 0) and the large one (3, 2, 1, 0); 'small' by default")
def margin_for_rating_tables(learner: Learner) -> None:
    for margins in (None, "small", "large"):
        for rating in RATING_LEVELS:
            got = _margin(learner, rating, margins)
            expected = margin_for(rating, margins or "small")
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                fail(f"margin_for_rating({rating!r}) returned {type(got).__name__}, expected a Python float")
            if not math.isclose(got, expected, abs_tol=1e-9):
                table = "" if margins is None else f", {margins!r}"
                fail(f"margin_for_rating({rating!r}{table}) returned {got:.4g}, expected {expected:.4g}")


@CHECKS.add(points=1, hint="an unknown rating or table name must raise ValueError naming the allowed values, "
                           "not quietly give a margin")
def margin_for_rating_rejects_unknown(learner: Learner) -> None:
    margin_for_rating = learner.namespace.get("margin_for_rating")
    learner.function("margin_for_rating")  # "not defined" / "not a function" messages
    for args in (("much better",), ("better", "huge"), ("",)):
        try:
            got = margin_for_rating(*args)
        except NotImplementedError:
            raise CheckFailed("margin_for_rating is not implemented yet (it raises NotImplementedError)",
                              wrong_answer=False) from None
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001 - the wrong kind of error
            fail(f"margin_for_rating{args!r} raised {type(exc).__name__}, expected ValueError")
        fail(f"margin_for_rating{args!r} returned {got!r}, expected a ValueError")


# ------------------------------------------------------------------ pair_accuracy_by_level
def _accuracy(learner: Learner, chosen: torch.Tensor, rejected: torch.Tensor, ratings: list[str]) -> Any:
    pair_accuracy_by_level = learner.function("pair_accuracy_by_level")
    return pair_accuracy_by_level(chosen.clone(), rejected.clone(), list(ratings))


def _expect_accuracies(got: Any, expected: dict[str, float], what: str) -> None:
    if not isinstance(got, dict):
        fail(f"{what} returned {type(got).__name__}, expected a dict rating level -> accuracy")
    if set(got) != set(expected):
        fail(f"{what} has the levels {sorted(got)}, expected {sorted(expected)} (the levels that have pairs)")
    for level, value in expected.items():
        acc = got[level]
        if isinstance(acc, torch.Tensor) and acc.numel() == 1:
            acc = acc.item()
        if isinstance(acc, bool) or not isinstance(acc, (int, float)):
            fail(f"{what}[{level!r}] is {type(acc).__name__}, expected a float")
        if not math.isclose(acc, value, abs_tol=1e-6):
            fail(f"{what}[{level!r}] is {acc:.4g}, expected {value:.4g}")


def _ratings(b: int, seed: int, levels: tuple[str, ...] = RATING_LEVELS) -> list[str]:
    picks = torch.randint(0, len(levels), (b,), generator=seeded(seed))
    return [levels[int(i)] for i in picks]


@CHECKS.add(points=2, hint="per rating level, the share of its pairs where r_chosen > r_rejected")
def pair_accuracy_by_level_matches_reference(learner: Learner) -> None:
    for b, seed in ((40, 8), (200, 9)):
        chosen, rejected = _rewards(b, seed)
        chosen = chosen + torch.linspace(2, 0, b)  # clearer pairs first: accuracies differ by level
        ratings = _ratings(b, seed)
        _expect_accuracies(_accuracy(learner, chosen, rejected, ratings),
                           reference_pair_accuracy_by_level(chosen, rejected, ratings),
                           f"pair_accuracy_by_level({b} pairs)")


@CHECKS.add(points=1, hint="a tie (equal rewards, e.g. an untrained zero head) is half right, so that a reward "
                           "model that cannot tell the two apart scores 0.5, not 0")
def pair_accuracy_by_level_counts_ties_as_half(learner: Learner) -> None:
    chosen = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 0.0, 3.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 2.0, 1.0, 0.0, -1.0, 3.0, -1.0])
    ratings = [RATING_LEVELS[i % 4] for i in range(8)]
    _expect_accuracies(_accuracy(learner, chosen, rejected, ratings),
                       reference_pair_accuracy_by_level(chosen, rejected, ratings),
                       "pair_accuracy_by_level(pairs with tied rewards)")


@CHECKS.add(points=1, hint="only the levels that have pairs get an accuracy: a level with no pairs has none "
                           "(not 0, not NaN); safety pairs, for one, are never 'slightly better'")
def pair_accuracy_by_level_omits_absent_levels(learner: Learner) -> None:
    chosen, rejected = _rewards(30, 10)
    ratings = _ratings(30, 10, (RATING_LEVELS[0], RATING_LEVELS[1], RATING_LEVELS[3]))
    _expect_accuracies(_accuracy(learner, chosen, rejected, ratings),
                       reference_pair_accuracy_by_level(chosen, rejected, ratings),
                       "pair_accuracy_by_level(pairs with no 'slightly better' level)")
