"""Shared pieces of the reward-model, rejection-sampling and DPO tests: a TinyWorld, its tasks, a
small tokenizer trained on its text, and models small enough for a few CPU steps per second.

(A uniquely named module rather than conftest.py, so that importing it cannot pick up another
test folder's conftest; the fixtures are imported into each test module.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minillama import Llama, LlamaConfig, LlamaRewardModel
from minillama.data import Oracle, Task, TinyWorld
from minillama.tokenizer import Tokenizer

REFUSAL = "I'm sorry, but I can't help with that."


def tiny_config(vocab_size: int, **overrides) -> LlamaConfig:
    return LlamaConfig(**{**dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=vocab_size,
                                 multiple_of=16, max_seq_len=256, max_batch_size=8), **overrides})


def tiny_lm(tokenizer: Tokenizer, seed: int = 0, **overrides) -> Llama:
    return Llama(tiny_config(tokenizer.vocab_size, **overrides), seed=seed).eval()


def tiny_rm(tokenizer: Tokenizer, seed: int = 0, head_std: float = 0.5) -> LlamaRewardModel:
    """A reward model with a random (not zero) head, so that its scores differ between responses."""
    rm = LlamaRewardModel(tiny_config(tokenizer.vocab_size), seed=seed)
    with torch.no_grad():
        rm.score.weight.copy_(torch.randn(rm.score.weight.shape, generator=torch.Generator().manual_seed(seed))
                              * head_std)
    return rm.eval()


def save_lm(model: Llama, directory: Path, tokenizer: Tokenizer | None = None) -> Path:
    """``model`` (and ``tokenizer``, as ``minillama sft`` saves one beside its model) in ``directory``."""
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def write_data_dir(world: TinyWorld, directory: Path, chat: int = 4, safety: int = 2, val_chat: int = 3,
                   val_safety: int = 2) -> Path:
    """The task files of a ``minillama data`` folder, small: short-prompt chat kinds only."""
    directory.mkdir(parents=True, exist_ok=True)
    kinds = ["fact_qa", "arithmetic"]
    for name, tasks in (("chat_train", world.chat_tasks("train", chat, kinds=kinds)),
                        ("safety_train", world.unsafe_tasks("train", safety)),
                        ("chat_val", world.chat_tasks("val", val_chat, kinds=kinds)),
                        ("safety_val", world.unsafe_tasks("val", val_safety))):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    return directory


@pytest.fixture(scope="module")
def world() -> TinyWorld:
    return TinyWorld(seed=0)


@pytest.fixture(scope="module")
def chat_tasks(world: TinyWorld) -> list[Task]:
    return world.chat_tasks("train", 24)


@pytest.fixture(scope="module")
def safety_tasks(world: TinyWorld) -> list[Task]:
    return world.unsafe_tasks("train", 16, borderline=0.5)


@pytest.fixture(scope="module")
def oracle(world: TinyWorld, chat_tasks: list[Task], safety_tasks: list[Task]) -> Oracle:
    return Oracle([*chat_tasks, *safety_tasks])


@pytest.fixture(scope="module")
def tokenizer(world: TinyWorld) -> Tokenizer:
    """BPE with 400 tokens on 30k characters of the world's text, chat prompts and a refusal (0.1 s).

    (It shadows the conftest's ``tokenizer`` in the modules that import it: these tests need one
    that has seen chat prompts, and must not change when that one does.)"""
    tasks = [*world.chat_tasks("train", 100), *world.unsafe_tasks("train", 40)]
    texts = [world.pretraining_text(30_000), *(f"{t.prompt}\n{t.reference}" for t in tasks), REFUSAL]
    return Tokenizer.train(texts, vocab_size=400)
