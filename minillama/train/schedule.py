"""Learning-rate schedule: linear warmup, then cosine decay to a floor (Llama 2's recipe).

Llama 2 warms up for 2000 steps and decays the learning rate along a cosine to 10% of its peak.
Warmup matters because AdamW's second-moment estimate is noisy in the first steps; full-size
updates on top of it can throw the weights somewhere they never recover from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CosineSchedule:
    """``lr(step)`` for the optimizer step about to be taken (``step`` counts from 0).

    * ``step < warmup_steps``: rises linearly, ``peak_lr * (step + 1) / warmup_steps``, so the
      first update is small but not zero;
    * then falls along half a cosine from ``peak_lr`` to ``min_lr_ratio * peak_lr``, reached at
      ``total_steps``;
    * past ``total_steps`` (a run extended on resume) it stays at the floor.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not self.peak_lr > 0:
            raise ValueError(f"CosineSchedule.peak_lr must be > 0, got {self.peak_lr}")
        if self.total_steps < 1:
            raise ValueError(f"CosineSchedule.total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"CosineSchedule.warmup_steps must be in [0, total_steps={self.total_steps}], "
                             f"got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"CosineSchedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    @property
    def min_lr(self) -> float:
        return self.min_lr_ratio * self.peak_lr

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / decay_steps) if decay_steps else 1.0
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.peak_lr - self.min_lr) * cosine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
