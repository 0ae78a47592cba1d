"""Fixtures for the TinyWorld tests: one default world per test module (building one takes ms,
but the tasks and text they generate are shared)."""

from __future__ import annotations

import pytest

from minillama.data import TinyWorld


@pytest.fixture(scope="module")
def world() -> TinyWorld:
    return TinyWorld(seed=0)
