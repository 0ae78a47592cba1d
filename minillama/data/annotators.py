"""Simulated annotators who judge better than they write.

Llama 2's case for RLHF ("Beyond Human Supervision"): the people who wrote its SFT demonstrations
wrote unevenly, but compared two answers reliably, so the best of K model samples, picked by a
reward model trained on their comparisons, could beat what they wrote. TinyWorld's annotators do
the same, in documented and seeded ways. Their *comparisons* are the oracle's (see
:mod:`minillama.data.preferences`); their *demonstrations* (:meth:`AnnotatorPool.write`) are right
in content, but a share ``uneven`` of them has one flaw:

=============  =======================================================  ==========================
flaw           the demonstration                                        what the oracle marks
=============  =======================================================  ==========================
ignores_form   the right answer in another form than the one asked      form
               ("The answer is Leo." for "a single word")
pads           the right answer, then a filler sentence said twice      clean (it degenerates)
hedges         the right answer, then "But I am not sure. Maybe not."   clean (a run-on)
over_refuses   a refusal of a harmless request that only looks risky    content, form, safety
               (borderline prompts only)                                (a false refusal)
=============  =======================================================  ==========================

Off-limits requests are always answered with a refusal (the annotators agree on safety). A
task's demonstration depends only on the pool's seed and the prompt, and a flawed draw is a
uniform below ``uneven``, so the flawed demonstrations at 30% are among those at 60%: a sweep of
``uneven`` changes the writing and nothing else.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from . import forms
from .offlimits import REFUSALS
from .tasks import Task

FLAWS: tuple[str, ...] = ("ignores_form", "pads", "hedges", "over_refuses")
# How a flawed demonstration goes wrong, by weight; a borderline one over-refuses half the time.
FLAW_WEIGHTS: dict[str, float] = {"ignores_form": 0.5, "pads": 0.25, "hedges": 0.25}
OVER_REFUSAL_SHARE = 0.5
HEDGE = "But I am not sure. Maybe not."


@dataclass(frozen=True)
class Demonstration:
    text: str
    flaw: str = ""  # one of FLAWS, "" for a demonstration as good as the oracle's reference


@dataclass(frozen=True)
class AnnotatorPool:
    """Writers of demonstrations: a share ``uneven`` (in [0, 1]) of them flawed (module docstring)."""

    uneven: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.uneven <= 1.0:
            raise ValueError(f"uneven must be a share in [0, 1], got {self.uneven}")

    def write(self, task: Task) -> Demonstration:
        """The demonstration an annotator of this pool writes for ``task``."""
        rng = random.Random(f"annotator:{self.seed}:{task.prompt}")
        flawed = rng.random() < self.uneven
        choice = rng.choices(list(FLAW_WEIGHTS), weights=list(FLAW_WEIGHTS.values()))[0]
        refuse = rng.random() < OVER_REFUSAL_SHARE
        if task.risky or not flawed:
            return Demonstration(task.reference)
        if task.safety == "borderline" and refuse:
            return Demonstration(REFUSALS[rng.randrange(len(REFUSALS))], "over_refuses")
        if choice == "ignores_form" and task.form:
            return Demonstration(forms.break_form(task.form, task.target, task.reference), "ignores_form")
        if choice == "hedges":
            return Demonstration(f"{_ended(task.reference)} {HEDGE}", "hedges")
        return Demonstration(forms.ramble(task.reference), "pads")

    def demonstrations(self, tasks: Sequence[Task]) -> list[Demonstration]:
        return [self.write(task) for task in tasks]


def _ended(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


def flaw_counts(demos: Sequence[Demonstration]) -> dict[str, int]:
    """How many demonstrations have each flaw (``"none"``: as good as the reference)."""
    counts = Counter(d.flaw or "none" for d in demos)
    return {name: counts.get(name, 0) for name in ("none", *FLAWS)}
