"""Fixtures of the whole suite: the tiny model shape, random models, one TinyWorld and its chat
tokenizer. Plain helpers live in helpers.py; a test folder adds only what is its own.

Markers: ``slow`` (seconds on the 2-core CPU; still part of ``make test``), ``integration`` (a stage,
a command or the pipeline end to end, writing files), ``gpu`` (skipped without CUDA). A test with
neither ``integration`` nor ``gpu`` is marked ``unit`` here, so ``pytest -m unit`` runs the fast core.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest
import torch
from torch import nn

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when minillama.kernels is first
# imported: set it before any test module can import it, so CPU runs use the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import chat_tokenizer, randomize  # noqa: E402
from helpers import tiny_config as make_tiny_config  # noqa: E402
from minillama.data import Oracle, Task, TinyWorld  # noqa: E402
from minillama.model import Llama  # noqa: E402
from minillama.tokenizer import Tokenizer  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Under `pytest -n N` each worker would start torch with one thread per core: N times too many.
    # Tiny models then spend their time handing work between threads (50x slower on 2 cores).
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(name) for name in ("integration", "gpu")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the threads'
    spin-waiting makes each step many times slower; both runs of a comparison use the same count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> Callable[..., Any]:
    """``tiny_config(**overrides) -> LlamaConfig``: the suite's one tiny shape (helpers.TINY)."""
    return make_tiny_config


@pytest.fixture
def random_weights() -> Callable[..., nn.Module]:
    """``random_weights(module, seed=0)``: :func:`helpers.randomize` for modules built elsewhere (transformers)."""
    return randomize


@pytest.fixture
def random_llama() -> Callable[..., Llama]:
    """``random_llama(seed=0, **config_overrides) -> Llama`` in eval mode with random weights."""

    def make(seed: int = 0, **overrides: Any) -> Llama:
        return randomize(Llama(make_tiny_config(**overrides), seed=seed), seed)

    return make


@pytest.fixture(scope="module")
def world() -> TinyWorld:
    return TinyWorld(seed=0)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """The chat tokenizer of the default world (helpers.chat_tokenizer)."""
    return chat_tokenizer(TinyWorld(seed=0))


@pytest.fixture(scope="module")
def chat_tasks(world: TinyWorld) -> list[Task]:
    return world.chat_tasks("train", 24)


@pytest.fixture(scope="module")
def safety_tasks(world: TinyWorld) -> list[Task]:
    return world.unsafe_tasks("train", 16, borderline=0.5)


@pytest.fixture(scope="module")
def oracle(chat_tasks: list[Task], safety_tasks: list[Task]) -> Oracle:
    return Oracle([*chat_tasks, *safety_tasks])
