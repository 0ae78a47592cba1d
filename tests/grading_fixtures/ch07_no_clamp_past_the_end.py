"""Progress not capped at 1: past total_steps the cosine climbs back up towards max_lr."""
import math

EXPECT_FAIL = {"lr_at_floor_and_beyond"}


def lr_at(step, max_lr, warmup_steps, total_steps, min_ratio=0.1):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    min_lr = min_ratio * max_lr
    decay_steps = total_steps - warmup_steps
    progress = (step - warmup_steps) / decay_steps if decay_steps > 0 else 1.0
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
