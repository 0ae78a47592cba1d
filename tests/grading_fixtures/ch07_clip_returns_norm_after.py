"""The norm returned is measured after clipping, so a log of it never shows a gradient spike."""
import math

EXPECT_FAIL = {"clip_grad_norm_returns_total_norm"}


def clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
