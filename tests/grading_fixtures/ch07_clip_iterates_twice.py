"""Parameters gone through twice: with model.parameters() (an iterator) the second pass, the one that
scales, sees nothing, and the gradients are never clipped."""
import math

EXPECT_FAIL = {"clip_grad_norm_scales_large_gradients"}


def clip_grad_norm(parameters, max_norm):
    total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in parameters if p.grad is not None))
    if total > max_norm:
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(max_norm / (total + 1e-6))
    return total
