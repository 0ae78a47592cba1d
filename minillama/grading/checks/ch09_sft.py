"""Chapter 09 checks: ``sft_labels`` and ``masked_lm_loss``.

References: the labels :func:`minillama.chat.chat_example` builds (the token id where the
assistant speaks, ``-100`` elsewhere) and :func:`minillama.sequences.lm_loss` (the mean next-token
cross-entropy over the labelled targets only; ``0`` when a batch has none).

Shapes: ``ids, assistant_mask, labels (b, t)``, ``logits (b, t, v)``; position ``i`` predicts
``labels[:, i + 1]``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...sequences import IGNORE_INDEX, lm_loss
from ..check import Checks, Learner, expect_tensor, fail, seeded

CHECKS = Checks()


def _chats(b: int, t: int, v: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an assistant mask shaped like packed chats: each row holds one or two answers
    (contiguous spans), the rest is prompt."""
    gen = seeded(seed)
    ids = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for row in range(b):
        for _ in range(1 + row % 2):
            start = int(torch.randint(1, t - 2, (), generator=gen))
            length = int(torch.randint(1, t - start, (), generator=gen))
            mask[row, start:start + length] = True
    return ids, mask


def reference_sft_labels(ids: torch.Tensor, assistant_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(assistant_mask, ids, torch.full_like(ids, IGNORE_INDEX))


def reference_masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # lm_loss reads logits for tokens[:, :-1] and targets labels[:, 1:]: hand it logits[:, :-1].
    batch = {"tokens": torch.zeros_like(labels), "labels": labels}
    loss, _ = lm_loss(lambda _inputs: logits[:, :-1], batch)
    return loss


# ------------------------------------------------------------------ sft_labels
def _labels(learner: Learner, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    sft_labels = learner.function("sft_labels")
    return sft_labels(ids.clone(), mask.clone())


@CHECKS.add(points=2, hint="keep the token id where assistant_mask is True (the answer and its <|end|>) and put "
                           "-100 everywhere else: torch.where(assistant_mask, ids, -100), no shift")
def sft_labels_matches_reference(learner: Learner) -> None:
    for b, t, seed in ((2, 12, 0), (3, 30, 1)):
        ids, mask = _chats(b, t, 50, seed)
        expect_tensor(_labels(learner, ids, mask), reference_sft_labels(ids, mask),
                      f"sft_labels(ids {(b, t)}, assistant_mask {(b, t)})", atol=0, rtol=0)
    ids = torch.arange(2, 9)  # one chat as a 1-d list of ids, as the tokenizer returns it
    mask = torch.tensor([False, False, False, True, True, True, False])
    expect_tensor(_labels(learner, ids, mask), reference_sft_labels(ids, mask),
                  f"sft_labels({ids.tolist()}, {mask.tolist()})", atol=0, rtol=0)


@CHECKS.add(points=1, hint="return a new tensor (torch.where, or ids.clone() before writing -100 into it): the "
                           "token ids are still needed as the model's input")
def sft_labels_leaves_ids_untouched(learner: Learner) -> None:
    ids, mask = _chats(2, 16, 50, seed=2)
    mine = ids.clone()
    sft_labels = learner.function("sft_labels")
    sft_labels(mine, mask.clone())
    if not torch.equal(mine, ids):
        fail(f"sft_labels changed its ids argument in {int((mine != ids).sum())} places; the model still needs "
             f"them as its input")


# ------------------------------------------------------------------ masked_lm_loss
def _loss_inputs(b: int, t: int, v: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = _chats(b, t, v, seed)
    logits = torch.randn(b, t, v, generator=seeded(seed + 100)) * 2
    return logits, ids, reference_sft_labels(ids, mask)


def _loss(learner: Learner, logits: torch.Tensor, labels: torch.Tensor) -> Any:
    masked_lm_loss = learner.function("masked_lm_loss")
    return masked_lm_loss(logits.clone(), labels.clone())


@CHECKS.add(points=1, hint="position i predicts token i + 1: cross-entropy of logits[:, :-1] against labels[:, 1:], "
                           "flattened to (b (t-1), v) and (b (t-1),)")
def masked_lm_loss_predicts_the_next_token(learner: Learner) -> None:
    for b, t, v, seed in ((2, 9, 11, 3), (1, 4, 7, 4)):
        logits, ids, _ = _loss_inputs(b, t, v, seed)  # every label kept: pretraining's loss
        expect_tensor(_loss(learner, logits, ids), reference_masked_lm_loss(logits, ids),
                      f"masked_lm_loss(logits {(b, t, v)}, labels {(b, t)} with no -100)")


@CHECKS.add(points=2, hint="targets equal to -100 add nothing, and the mean is over the answer targets only: "
                           "sum of their losses / their number (F.cross_entropy with ignore_index=-100 does both)")
def masked_lm_loss_averages_over_answer_tokens(learner: Learner) -> None:
    for b, t, v, seed in ((2, 12, 13, 5), (4, 20, 9, 6)):
        logits, _, labels = _loss_inputs(b, t, v, seed)
        kept = int((labels[:, 1:] != IGNORE_INDEX).sum())
        expect_tensor(_loss(learner, logits, labels), reference_masked_lm_loss(logits, labels),
                      f"masked_lm_loss(logits {(b, t, v)}, labels with {kept} of {b * (t - 1)} targets kept)")


@CHECKS.add(points=1, hint="a batch with no answer token (all labels -100) has nothing to learn: return 0, not "
                           "0 / 0 = NaN (divide the summed loss by max(count, 1))")
def masked_lm_loss_without_answer_tokens(learner: Learner) -> None:
    logits = torch.randn(2, 6, 5, generator=seeded(7))
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[:, 0] = 3  # position 0 is never a target: still nothing to learn
    expect_tensor(_loss(learner, logits, labels), reference_masked_lm_loss(logits, labels),
                  "masked_lm_loss(logits, labels that are -100 at every target)")
