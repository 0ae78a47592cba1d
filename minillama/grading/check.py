"""The vocabulary chapter checks are written in.

A check is a plain function ``check(learner) -> None`` registered with points and a hint:

.. code-block:: python

    CHECKS = Checks()

    @CHECKS.add(points=2, hint="the pairs are (x_i, x_{i + d/2}), not adjacent features")
    def apply_rope_matches_reference(learner: Learner) -> None:
        apply_rope = learner.function("apply_rope")
        expect_tensor(apply_rope(x.clone(), cos, sin), reference, "apply_rope(x, cos, sin)")

It passes by returning and fails by raising :class:`CheckFailed` (the ``expect_*`` helpers do),
so a check reads as the property it tests. The learner's code is only ever reached through
:meth:`Learner.function`, which turns "not defined", "not implemented yet" and "raised an
exception" into failures with a message that names the function.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

ONE_LINE = 300  # characters of an exception message kept in a hint


class CheckFailed(Exception):
    """A check did not pass. ``wrong_answer=False`` marks failures that the check's hint cannot
    help with (the function is missing or not implemented yet)."""

    def __init__(self, message: str, *, wrong_answer: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.wrong_answer = wrong_answer


class CheckTimeout(BaseException):
    """Raised inside the learner's code when a check runs out of time.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a learner's ``except Exception``
    inside a loop cannot swallow it."""


@dataclass(frozen=True)
class Check:
    name: str
    points: int
    hint: str
    run: Callable[["Learner"], None]


class Checks:
    """The ordered checks of one chapter; ``@CHECKS.add(points=..., hint=...)`` registers one
    under its function's name."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, points: int, hint: str) -> Callable[[Callable[["Learner"], None]], Callable[["Learner"], None]]:
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ValueError(f"check points must be an int >= 1, got {points!r}")

        def register(fn: Callable[[Learner], None]) -> Callable[[Learner], None]:
            if fn.__name__ in self._checks:
                raise ValueError(f"check {fn.__name__!r} is registered twice")
            self._checks[fn.__name__] = Check(fn.__name__, points, hint, fn)
            return fn

        return register

    def __iter__(self) -> Iterator[Check]:
        return iter(self._checks.values())

    def __len__(self) -> int:
        return len(self._checks)

    def get(self, name: str) -> Check:
        if name not in self._checks:
            raise ValueError(f"unknown check {name!r}; allowed: {list(self._checks)}")
        return self._checks[name]

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self)


def one_line(text: str, limit: int = ONE_LINE) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


class Learner:
    """The learner's notebook namespace, as the checks see it."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def function(self, name: str) -> Callable[..., Any]:
        """The learner's function ``name``, wrapped so that its failures become :class:`CheckFailed`."""
        fn = self.namespace.get(name)
        if fn is None:
            raise CheckFailed(f"{name} is not defined: run its cell, and fix any error that cell shows",
                              wrong_answer=False)
        if not callable(fn):
            raise CheckFailed(f"{name} is not a function but {type(fn).__name__} {one_line(repr(fn), 40)}",
                              wrong_answer=False)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except NotImplementedError:
                raise CheckFailed(f"{name} is not implemented yet (it raises NotImplementedError)",
                                  wrong_answer=False) from None
            except Exception as exc:  # noqa: BLE001 - any learner error is a failed check
                raise CheckFailed(f"{name} raised {type(exc).__name__}: {one_line(exc)}") from None

        return call

    @contextlib.contextmanager
    def using_references(self, **functions: Callable[..., Any]) -> Iterator[None]:
        """Swap the reference in for other graded functions while a check runs.

        ``gqa_attention`` may call the learner's ``causal_mask``; checking it with the reference
        mask means one mistake costs points once, in the checks of the function that has it."""
        saved = {name: self.namespace[name] for name in functions if name in self.namespace}
        self.namespace.update(functions)
        try:
            yield
        finally:
            for name in functions:
                if name in saved:
                    self.namespace[name] = saved[name]
                else:
                    self.namespace.pop(name, None)


# --------------------------------------------------------------------------- expectations
def fail(message: str) -> None:
    raise CheckFailed(message)


def expect_tensor(got: Any, expected: torch.Tensor, what: str, *, atol: float = 1e-5, rtol: float = 1e-4,
                  where: torch.Tensor | None = None) -> None:
    """``got`` is a tensor of ``expected``'s shape and dtype, close to it.

    ``where`` (a bool tensor broadcastable to the shape) restricts the value comparison to the
    entries that are specified (e.g. the outputs of real tokens, not of padding)."""
    expect_tensor_like(got, expected, what)
    got_v, exp_v = got.detach().float(), expected.detach().float()
    if where is not None:
        where = where.expand(expected.shape)
        got_v, exp_v = got_v[where], exp_v[where]
    if not torch.isfinite(got_v).all() and torch.isfinite(exp_v).all():
        fail(f"{what} contains NaN or inf")
    if not torch.allclose(got_v, exp_v, atol=atol, rtol=rtol, equal_nan=True):
        error = (got_v - exp_v).abs().nan_to_num(nan=math.inf).max().item()
        fail(f"{what} differs from the reference (max abs error {error:.3g})")


def expect_tensor_like(got: Any, expected: torch.Tensor, what: str) -> None:
    """``got`` is a tensor with ``expected``'s shape and dtype (values not compared)."""
    if not isinstance(got, torch.Tensor):
        fail(f"{what} returned {type(got).__name__}, expected a torch.Tensor")
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if got.dtype != expected.dtype:
        fail(f"{what} has dtype {got.dtype}, expected {expected.dtype}")


def expect_equal(got: Any, expected: Any, what: str) -> None:
    """``got == expected`` exactly, and of the same Python type (an int must not be a float)."""
    if type(got) is not type(expected):
        fail(f"{what} returned {type(got).__name__} {got!r}, expected {type(expected).__name__} {expected!r}")
    if got != expected:
        fail(f"{what} returned {got!r}, expected {expected!r}")


def expect_pair(got: Any, what: str, names: str) -> tuple[Any, Any]:
    """``got`` is a pair (tuple or list of two) of what ``names`` says; return it."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"{what} returned {type(got).__name__}, expected a pair {names}")
    return got[0], got[1]


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with ``seed``: every input a check draws is the same on every run."""
    return torch.Generator().manual_seed(seed)
