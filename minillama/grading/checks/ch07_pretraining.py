"""Chapter 07 checks: ``lr_at``, ``shifted_lm_loss`` and ``clip_grad_norm``.

References: :class:`minillama.train.schedule.CosineSchedule` (the learning rate for the step
about to be taken, ``step`` counted from 0: warmup gives ``max_lr * (step + 1) / warmup_steps``),
:func:`minillama.sequences.causal_lm_loss` and ``torch.nn.utils.clip_grad_norm_``.

Shapes: ``logits (b, t, v)``, ``labels (b, t)``; position ``i`` predicts ``labels[:, i + 1]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...sequences import causal_lm_loss
from ...train.schedule import CosineSchedule
from ..check import Checks, Learner, expect_tensor, fail, seeded

CHECKS = Checks()


# ------------------------------------------------------------------ lr_at
def _lr(learner: Learner, step: int, max_lr: float, warmup_steps: int, total_steps: int,
        min_ratio: float = 0.1) -> float:
    lr_at = learner.function("lr_at")
    got = lr_at(step, max_lr, warmup_steps, total_steps, min_ratio)
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"lr_at({step}, ...) returned {type(got).__name__}, expected a Python float (use math.cos)")
    return float(got)


def _expect_lr(learner: Learner, step: int, max_lr: float, warmup_steps: int, total_steps: int,
               min_ratio: float = 0.1) -> None:
    got = _lr(learner, step, max_lr, warmup_steps, total_steps, min_ratio)
    expected = CosineSchedule(max_lr, warmup_steps, total_steps, min_ratio)(step)
    if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15):
        fail(f"lr_at(step={step}, max_lr={max_lr:g}, warmup_steps={warmup_steps}, total_steps={total_steps}, "
             f"min_ratio={min_ratio:g}) returned {got:.6g}, expected {expected:.6g}")


@CHECKS.add(points=2, hint="warmup: max_lr * (step + 1) / warmup_steps; then progress = (step - warmup_steps) / "
                           "(total_steps - warmup_steps) and lr = min_lr + (max_lr - min_lr) * 0.5 * "
                           "(1 + cos(pi * progress)), min_lr = min_ratio * max_lr")
def lr_at_matches_reference(learner: Learner) -> None:
    for max_lr, warmup, total, ratio in ((3e-4, 10, 100, 0.1), (1e-3, 4, 37, 0.1), (2.0, 1, 20, 0.3),
                                         (6e-4, 7, 7, 0.1)):
        for step in range(total):
            _expect_lr(learner, step, max_lr, warmup, total, ratio)


@CHECKS.add(points=1, hint="step counts from 0 and names the update about to be made: the first update already "
                           "gets max_lr / warmup_steps (not 0), and step warmup_steps - 1 reaches max_lr")
def lr_at_warmup_endpoints(learner: Learner) -> None:
    for warmup in (1, 5, 2000):
        for step in (0, warmup // 2, warmup - 1):
            _expect_lr(learner, step, 3e-4, warmup, 10 * warmup)


@CHECKS.add(points=1, hint="the cosine ends at min_ratio * max_lr (10% by default, as in Llama 2), not at 0, "
                           "and stays there for steps past total_steps")
def lr_at_floor_and_beyond(learner: Learner) -> None:
    for ratio in (0.1, 0.25):
        for step in (100, 101, 150, 1000):
            _expect_lr(learner, step, 1e-3, 10, 100, ratio)


@CHECKS.add(points=1, hint="with warmup_steps = 0 there is no warmup (and nothing to divide by): step 0 is "
                           "already max_lr and the cosine starts at once")
def lr_at_without_warmup(learner: Learner) -> None:
    for step in (0, 1, 25, 49, 50):  # min_ratio 0 here: the floor has checks of its own
        _expect_lr(learner, step, 5e-4, 0, 50, 0.0)


# ------------------------------------------------------------------ shifted_lm_loss
def _loss_inputs(b: int, t: int, v: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = seeded(seed)
    return torch.randn(b, t, v, generator=gen) * 2, torch.randint(0, v, (b, t), generator=gen)


def _loss(learner: Learner, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None) -> Any:
    shifted_lm_loss = learner.function("shifted_lm_loss")
    if ignore_index is None:
        return shifted_lm_loss(logits.clone(), labels.clone())
    return shifted_lm_loss(logits.clone(), labels.clone(), ignore_index=ignore_index)


@CHECKS.add(points=2, hint="position i predicts token i + 1: cross-entropy of logits[:, :-1] against "
                           "labels[:, 1:], flattened to (b (t-1), v) and (b (t-1),), averaged")
def shifted_lm_loss_matches_reference(learner: Learner) -> None:
    for b, t, v, seed in ((2, 7, 11, 0), (3, 2, 5, 1)):
        logits, labels = _loss_inputs(b, t, v, seed)
        expect_tensor(_loss(learner, logits, labels), causal_lm_loss(logits, labels),
                      f"shifted_lm_loss(logits {(b, t, v)}, labels {(b, t)})")


@CHECKS.add(points=2, hint="targets equal to ignore_index (padding, prompt tokens) add nothing, and the mean is "
                           "over the remaining targets only: pass ignore_index on to F.cross_entropy")
def shifted_lm_loss_ignores_targets(learner: Learner) -> None:
    logits, labels = _loss_inputs(3, 8, 13, seed=2)
    for ignore_index in (-100, -1):
        masked = labels.clone()
        masked[0, :5] = ignore_index  # a prompt
        masked[1, 6:] = ignore_index  # padding at the end
        masked[2, 0] = ignore_index  # position 0 is never a target anyway
        expected = causal_lm_loss(logits, masked, ignore_index=ignore_index)
        got = _loss(learner, logits, masked, ignore_index if ignore_index != -100 else None)
        expect_tensor(got, expected, f"shifted_lm_loss with ignore_index={ignore_index} on 7 of 24 labels")


@CHECKS.add(points=1, hint="compute the loss in float32 (logits.float()): bf16 logits give a float32 loss")
def shifted_lm_loss_in_float32(learner: Learner) -> None:
    logits, labels = _loss_inputs(2, 6, 17, seed=3)
    logits = logits.to(torch.bfloat16)
    expect_tensor(_loss(learner, logits, labels), causal_lm_loss(logits, labels),
                  "shifted_lm_loss(bf16 logits, labels)", atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ clip_grad_norm
def _parameters(seed: int, scale: float) -> list[torch.Tensor]:
    gen = seeded(seed)
    params = [torch.zeros(shape, requires_grad=True) for shape in ((4, 3), (5,), (2, 2, 3), (3,))]
    for p in params[:3]:  # the last one has no gradient (a frozen or unused parameter)
        p.grad = torch.randn(p.shape, generator=gen) * scale
    return params


def _total(got: Any, what: str) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return float(got.item())
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"{what} returned {type(got).__name__}, expected the total norm as a float")
    return float(got)


def _clip(learner: Learner, params: list[torch.Tensor], max_norm: float) -> tuple[float, list[torch.Tensor | None]]:
    clip_grad_norm = learner.function("clip_grad_norm")
    ours = [p.detach().clone().requires_grad_(True) for p in params]
    for mine, p in zip(ours, params):
        mine.grad = None if p.grad is None else p.grad.clone()
    total = clip_grad_norm(iter(ours), max_norm)  # an iterator, as model.parameters() is: one pass only
    return _total(total, f"clip_grad_norm(parameters, {max_norm})"), [p.grad for p in ours]


def _reference_clip(params: list[torch.Tensor], max_norm: float) -> tuple[float, list[torch.Tensor | None]]:
    ref = [p.detach().clone().requires_grad_(True) for p in params]
    for mine, p in zip(ref, params):
        mine.grad = None if p.grad is None else p.grad.clone()
    total = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    return float(total), [p.grad for p in ref]


def _expect_grads(got: list[torch.Tensor | None], expected: list[torch.Tensor | None], what: str) -> None:
    for i, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            if g is not None:
                fail(f"{what}: parameter {i} had no gradient and got one")
            continue
        expect_tensor(g, e, f"{what}: gradient of parameter {i}", atol=1e-6, rtol=1e-4)


@CHECKS.add(points=1, hint="the norm is global: sqrt of the sum over every parameter of sum(grad ** 2), "
                           "measured before clipping; parameters whose .grad is None are skipped")
def clip_grad_norm_returns_total_norm(learner: Learner) -> None:
    for seed, scale, max_norm in ((0, 3.0, 1.0), (1, 0.01, 1.0)):
        params = _parameters(seed, scale)
        got, _ = _clip(learner, params, max_norm)
        expected, _ = _reference_clip(params, max_norm)
        if not math.isclose(got, expected, rel_tol=1e-5):
            fail(f"clip_grad_norm returned {got:.6g} for gradients of total norm {expected:.6g}")


@CHECKS.add(points=2, hint="when the total norm exceeds max_norm, multiply every gradient in place by "
                           "max_norm / (total + 1e-6): one factor for all, so the direction is kept")
def clip_grad_norm_scales_large_gradients(learner: Learner) -> None:
    params = _parameters(2, 3.0)
    _, got = _clip(learner, params, 1.0)
    _, expected = _reference_clip(params, 1.0)
    _expect_grads(got, expected, "clip_grad_norm(gradients of norm ~20, max_norm=1.0)")


@CHECKS.add(points=1, hint="gradients whose total norm is already below max_norm are left exactly as they are")
def clip_grad_norm_leaves_small_gradients(learner: Learner) -> None:
    params = _parameters(3, 0.05)
    _, got = _clip(learner, params, 1.0)
    _expect_grads(got, [p.grad for p in params], "clip_grad_norm(gradients of norm ~0.3, max_norm=1.0)")
