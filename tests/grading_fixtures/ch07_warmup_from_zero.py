"""Warmup off by one: max_lr * step / warmup_steps, so the first update gets a learning rate of 0 and
max_lr is only reached one step late."""
import math

EXPECT_FAIL = {"lr_at_matches_reference", "lr_at_warmup_endpoints"}


def lr_at(step, max_lr, warmup_steps, total_steps, min_ratio=0.1):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    min_lr = min_ratio * max_lr
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
