"""Small-number arithmetic: ``a plus b`` and ``a minus b`` up to 20, ``a times b`` up to 10 x 10.

A problem's split is decided by the problem itself (``key``), however it is phrased, so a sum
asked in the test split is never stated in the training text or asked in the SFT data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPS: tuple[str, ...] = ("plus", "minus", "times")
MAX_TERM = 20
MAX_FACTOR = 10


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        if self.op == "plus":
            return self.a + self.b
        if self.op == "minus":
            return self.a - self.b
        return self.a * self.b

    @property
    def key(self) -> str:
        return f"sum:{self.a} {self.op} {self.b}"

    def statement(self) -> str:
        """``"7 plus 5 is 12."``"""
        return f"{self.a} {self.op} {self.b} is {self.answer}."


def draw_problem(rng: random.Random) -> Problem:
    """A random problem; differences are never negative."""
    op = rng.choice(OPS)
    if op == "times":
        return Problem(rng.randint(0, MAX_FACTOR), op, rng.randint(0, MAX_FACTOR))
    a = rng.randint(0, MAX_TERM)
    b = rng.randint(0, MAX_TERM) if op == "plus" else rng.randint(0, a)
    return Problem(a, op, b)
