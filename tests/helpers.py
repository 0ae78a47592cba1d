"""Plain helpers of the test suite, importable as ``helpers`` from any test module (pytest puts
``tests/`` on ``sys.path`` for the root conftest.py). The fixtures that wrap them are in conftest.py.

One tiny model shape (:func:`tiny_config`: dim 64, 2 layers, 4 heads, vocab 97) that a test
overrides where it needs another; the post-training tests use the same function through
:func:`chat_lm` with a one-layer shape sized for the chat tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillama import Llama, LlamaConfig, LlamaRewardModel
from minillama.data import TinyWorld
from minillama.tokenizer import Tokenizer

TINY = dict(dim=64, n_layers=2, n_heads=4, vocab_size=97, multiple_of=16, max_seq_len=64)
# The post-training tests' models: one layer, read by the chat tokenizer, long enough for a chat.
CHAT = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=256)
REFUSAL = "I'm sorry, but I can't help with that."
# `minillama pretrain` flags for a model and a run that take a second (with a token folder of vocab 64).
PRETRAIN_ARGS = ["--dim", "32", "--n-layers", "1", "--n-heads", "2", "--n-kv-heads", "1", "--seq-len", "16",
                 "--batch-size", "4", "--warmup", "1", "--eval-interval", "2", "--eval-batches", "2",
                 "--checkpoint-interval", "2", "--no-progress"]


def tiny_config(**overrides: Any) -> LlamaConfig:
    return LlamaConfig(**{**TINY, **overrides})


def randomize(model: nn.Module, seed: int = 0, std: float = 0.08) -> nn.Module:
    """Draw every parameter at random, the RMSNorm scales included.

    The default init leaves the norms at 1, which would hide a swapped attention_norm/ffn_norm or
    a norm that is never loaded; ``std`` is large enough that attention is far from uniform and the
    logits are O(1), small enough that float32 round-off stays near 1e-6.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else std * noise)
    return model.eval()


def chat_tokenizer(world: TinyWorld) -> Tokenizer:
    """BPE with 400 tokens on 30k characters of the world's text, chat prompts and a refusal (0.1 s)."""
    tasks = [*world.chat_tasks("train", 100), *world.unsafe_tasks("train", 40)]
    texts = [world.pretraining_text(30_000), *(f"{t.prompt}\n{t.reference}" for t in tasks), REFUSAL]
    return Tokenizer.train(texts, vocab_size=400)


def chat_lm(tokenizer: Tokenizer, seed: int = 0, **overrides: Any) -> Llama:
    """A random one-layer chat model for ``tokenizer``, in eval mode."""
    return Llama(tiny_config(**{**CHAT, "vocab_size": tokenizer.vocab_size, **overrides}), seed=seed).eval()


def chat_rm(tokenizer: Tokenizer, seed: int = 0, head_std: float = 0.5) -> LlamaRewardModel:
    """A reward model with a random (not zero) head, so that its scores differ between responses."""
    rm = LlamaRewardModel(tiny_config(**CHAT, vocab_size=tokenizer.vocab_size), seed=seed)
    with torch.no_grad():
        rm.score.weight.copy_(torch.randn(rm.score.weight.shape, generator=torch.Generator().manual_seed(seed))
                              * head_std)
    return rm.eval()


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
