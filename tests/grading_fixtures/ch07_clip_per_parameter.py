"""Each gradient clipped to max_norm on its own: the update changes direction, and the total norm can
still be len(parameters) times too large."""
import math

EXPECT_FAIL = {"clip_grad_norm_scales_large_gradients"}


def clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    for g in grads:
        norm = float(g.norm())
        if norm > max_norm:
            g.mul_(max_norm / (norm + 1e-6))
    return total
