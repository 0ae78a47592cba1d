"""Token sequences in batches: padding, next-token losses and log-probabilities, evaluation mode.

The mechanisms every stage needs, written once. One convention throughout: a *target* array is
aligned with the logits (``targets[:, i]`` is the token position ``i`` predicts), and
``IGNORE_INDEX`` marks a target that carries no loss (padding, prompt tokens, the last position).
:func:`token_nll` is the one cross-entropy every loss and log-probability goes through: the
pretraining and SFT loss (:func:`lm_loss`), :func:`causal_lm_loss`, and the response
log-probabilities DPO and the language-model probes read (:func:`sequence_logprobs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
Example = tuple[list[int], list[int]]  # (token ids, labels with IGNORE_INDEX outside the answer)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = 0, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ``ids, mask (n, width)`` (int64), padded on the right, or on the left (for
    generation: every row's next token is then predicted at the last column). ``mask`` is 1 on the
    tokens, 0 on the padding."""
    if not rows:
        raise ValueError("rows must not be empty")
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def token_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "none",
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``-log p(target)`` at each position, in float32: ``(b, t, v), (b, t) -> (b, t)`` (0 where the
    target is ``ignore_index``), or the ``"sum"`` / ``"mean"`` over the counted targets."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy: position ``i`` predicts ``labels[:, i + 1]``.

    ``logits (b, t, v)``, ``labels (b, t)`` (usually the input ids, with ``ignore_index`` where no
    loss is wanted: padding, prompt tokens). Computed in float32. ``reduction="none"`` gives the
    ``b * (t - 1)`` per-position losses."""
    # Shift the labels, not the logits: slicing (b, t, v) logits would copy them, and their gradient.
    targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)  # the last position predicts nothing
    loss = token_nll(logits, targets, reduction, ignore_index)
    return loss[:, :-1].reshape(-1) if reduction == "none" else loss


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The trainer's loss for pretraining, SFT and rejection-sampling fine-tuning: the mean
    next-token cross-entropy over the counted targets of a batch.

    ``batch["tokens"] (b, t + 1)``: inputs are ``tokens[:, :-1]``, targets ``labels[:, 1:]`` where
    ``labels`` (same shape, ``IGNORE_INDEX`` outside the answers) defaults to the tokens; an optional
    ``attention_mask (b, t + 1)`` marks padding. ``count`` is the number of counted targets: a batch
    with none gives loss 0 with count 0, so it adds nothing to the step's mean."""
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], batch.get("labels", tokens)[:, 1:]
    mask = batch.get("attention_mask")
    logits = model(inputs) if mask is None else model(inputs, attention_mask=mask[:, :-1])  # b t v
    count = (targets != IGNORE_INDEX).sum()
    return token_nll(logits, targets, "sum") / count.clamp(min=1), {"count": count, "tokens": inputs.numel()}


def sequence_logprobs(model: Callable[..., torch.Tensor], input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None, response_mask: torch.Tensor) -> torch.Tensor:
    """``sum_i log p(input_ids[:, i] | input_ids[:, :i])`` over the positions ``response_mask`` marks:
    ``(b, t), (b, t), (b, t) -> (b,)``. Differentiable (for DPO); padding may be on either side.
    ``response_mask[:, 0]`` is ignored: the first token has no context to be predicted from."""
    if input_ids.shape != response_mask.shape:
        raise ValueError(f"response_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(response_mask.shape)}")
    logits = model(input_ids, attention_mask=attention_mask)[:, :-1]  # (b, t-1, v): position i predicts i+1
    targets = input_ids[:, 1:].masked_fill(~response_mask[:, 1:].bool(), IGNORE_INDEX)
    return -token_nll(logits, targets).sum(-1)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` the model in eval mode, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
