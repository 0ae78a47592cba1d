"""The cosine decays all the way to 0 instead of to min_ratio * max_lr (10% in Llama 2)."""
import math

EXPECT_FAIL = {"lr_at_matches_reference", "lr_at_floor_and_beyond"}


def lr_at(step, max_lr, warmup_steps, total_steps, min_ratio=0.1):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return max_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
