"""Chapter 12 checks: ``dpo_loss`` and ``dpo_nll_loss``.

Reference: :func:`minillama.stages.dpo.dpo_loss` (its first result, the loss). The implicit reward of a
response is ``beta * (log pi(y|x) - log ref(y|x))``, and the loss is
``mean(-log sigmoid(reward_chosen - reward_rejected))``; ``dpo_nll_loss`` adds
``alpha * mean(-policy_chosen / chosen_tokens)``, the chosen responses' NLL per token.
``dpo_nll_loss`` is checked with the reference ``dpo_loss`` swapped in.

Shapes: every argument ``(b,)``: summed log-probabilities of each pair's responses under the policy
and under the frozen reference, and the number of tokens of each chosen response.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...stages.dpo import dpo_loss
from ..check import Checks, Learner, expect_tensor, seeded

CHECKS = Checks()


def reference_dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                       ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)[0]


def reference_dpo_nll_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                           ref_rejected: torch.Tensor, chosen_tokens: torch.Tensor, beta: float = 0.1,
                           alpha: float = 0.2) -> torch.Tensor:
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, chosen_tokens, alpha)[0]


def _logps(b: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Summed log-probabilities of responses of 5 to 30 tokens: the policy near its reference."""
    gen = seeded(seed)
    tokens = torch.randint(5, 31, (b,), generator=gen)
    ref_chosen = -tokens * (0.5 + torch.rand(b, generator=gen))
    ref_rejected = -tokens * (0.5 + torch.rand(b, generator=gen))
    policy_chosen = ref_chosen + torch.randn(b, generator=gen) * 3
    policy_rejected = ref_rejected + torch.randn(b, generator=gen) * 3
    return policy_chosen, policy_rejected, ref_chosen, ref_rejected, tokens


def _dpo(learner: Learner, *logps: torch.Tensor, beta: float) -> Any:
    dpo = learner.function("dpo_loss")
    return dpo(*(x.clone() for x in logps), beta)


# ------------------------------------------------------------------ dpo_loss
@CHECKS.add(points=2, hint="implicit rewards beta * (policy - ref) of each side, then "
                           "mean(-logsigmoid(reward_chosen - reward_rejected)); each policy log-probability is "
                           "compared with the reference's of the same response")
def dpo_loss_matches_reference(learner: Learner) -> None:
    for b, seed, beta in ((8, 0, 0.1), (32, 1, 0.5), (3, 2, 2.0)):
        pc, pr, rc, rr, _ = _logps(b, seed)
        expect_tensor(_dpo(learner, pc, pr, rc, rr, beta=beta), reference_dpo_loss(pc, pr, rc, rr, beta),
                      f"dpo_loss({b} pairs, beta={beta})")


@CHECKS.add(points=1, hint="where the policy is still the reference both implicit rewards are 0 and the loss is "
                           "-log sigmoid(0) = log 2, whatever beta and the log-probabilities are")
def dpo_loss_is_log_2_at_the_start(learner: Learner) -> None:
    _, _, rc, rr, _ = _logps(16, 3)
    for beta in (0.1, 1.0):
        got = _dpo(learner, rc, rr, rc, rr, beta=beta)
        expect_tensor(got, torch.tensor(math.log(2)), f"dpo_loss(policy == reference, beta={beta})")


@CHECKS.add(points=1, hint="for a large negative margin sigmoid underflows to 0 and log(0) = -inf: use "
                           "F.logsigmoid, which stays finite")
def dpo_loss_stable_for_large_margins(learner: Learner) -> None:
    rc, rr = torch.tensor([-50.0, -50.0, -40.0]), torch.tensor([-60.0, -60.0, -45.0])
    pc, pr = rc + torch.tensor([-3000.0, 2500.0, 0.0]), rr + torch.tensor([2000.0, 0.0, -1200.0])
    expect_tensor(_dpo(learner, pc, pr, rc, rr, beta=0.1), reference_dpo_loss(pc, pr, rc, rr, 0.1),
                  "dpo_loss with implicit reward margins of -500, +250 and +120")


# ------------------------------------------------------------------ dpo_nll_loss
def _dpo_nll(learner: Learner, *args: torch.Tensor, beta: float, alpha: float) -> Any:
    dpo_nll = learner.function("dpo_nll_loss")
    with learner.using_references(dpo_loss=reference_dpo_loss):
        return dpo_nll(*(x.clone() for x in args), beta, alpha)


@CHECKS.add(points=2, hint="dpo_loss(...) + alpha * mean(-policy_chosen / chosen_tokens): the NLL of the CHOSEN "
                           "responses under the policy, per token, averaged over pairs")
def dpo_nll_loss_matches_reference(learner: Learner) -> None:
    for b, seed, beta, alpha in ((8, 4, 0.1, 0.2), (20, 5, 0.5, 1.0)):
        pc, pr, rc, rr, tokens = _logps(b, seed)
        expect_tensor(_dpo_nll(learner, pc, pr, rc, rr, tokens, beta=beta, alpha=alpha),
                      reference_dpo_nll_loss(pc, pr, rc, rr, tokens, beta, alpha),
                      f"dpo_nll_loss({b} pairs, beta={beta}, alpha={alpha})")


@CHECKS.add(points=1, hint="with alpha = 0 the NLL term vanishes and the loss is plain DPO")
def dpo_nll_loss_alpha_zero_is_dpo(learner: Learner) -> None:
    pc, pr, rc, rr, tokens = _logps(12, 6)
    expect_tensor(_dpo_nll(learner, pc, pr, rc, rr, tokens, beta=0.1, alpha=0.0),
                  reference_dpo_loss(pc, pr, rc, rr, 0.1), "dpo_nll_loss(..., alpha=0)")


@CHECKS.add(points=1, hint="the NLL is per token (-policy_chosen / chosen_tokens), so a long answer does not "
                           "weigh more than a short one: twice the tokens at the same log-probability per token "
                           "give the same term")
def dpo_nll_loss_is_per_token(learner: Learner) -> None:
    # The policy equals the reference, so the DPO part is log 2 and only the NLL term differs.
    tokens = torch.tensor([4, 8, 40])
    chosen = -0.7 * tokens.float()
    rejected = torch.tensor([-5.0, -9.0, -30.0])
    expect_tensor(_dpo_nll(learner, chosen, rejected, chosen, rejected, tokens, beta=0.1, alpha=1.0),
                  reference_dpo_nll_loss(chosen, rejected, chosen, rejected, tokens, 0.1, 1.0),
                  "dpo_nll_loss(chosen answers of 4, 8 and 40 tokens at -0.7 nats per token, alpha=1)")
