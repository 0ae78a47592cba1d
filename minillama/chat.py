"""Chats: the template's tokens for a prompt and its answer, answers sampled from a model many
prompts at once, and the log-probability of a given answer.

One encoder, :func:`encode_chat`, serves every stage: SFT examples, preference pairs, reward
scores and the prompts a model answers. One over-length policy: a chat longer than the model's
context raises a ``ValueError`` naming the limit and the length. Nothing is cut silently: a story
question without its story is another question.

Sampling (:func:`sample_responses`) runs the prompts in batches through
:func:`~minillama.generate.generate`. Prompts are sorted by length first, so that a batch holds
prompts of similar length and little padding. Random numbers belong to the *response*, not to the
batch: draw ``k`` of sample ``j`` of prompt ``i`` is ``u[k]`` of the uniform stream
``numpy.random.default_rng([seed, i, j])``, turned into a token by the inverse of the filtered
distribution's CDF. So a response depends only on ``(seed, i, j)``: not on ``batch_size``, the
sorting, or which other prompts share its batch (up to float round-off in the padded forward pass,
which can move a CDF boundary by ~1e-7). One response can be regenerated alone, and rejection
sampling with K samples gets the same K responses on any machine size. A prompt is run through
the model once whatever ``n_samples`` is: its KV cache is copied to its samples' rows. Greedy
decoding (``temperature == 0``) computes each prompt once and repeats it ``n_samples`` times.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .generate import generate
from .model import Llama
from .sequences import IGNORE_INDEX, Example, eval_mode, pad_rows, sequence_logprobs
from .tokenizer import Tokenizer


def chat_messages(prompt: str, response: str | None = None, system: str | None = None) -> list[dict[str, str]]:
    """The conversation ``[system], user: prompt, [assistant: response]`` as template messages."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def encode_chat(tokenizer: Tokenizer, prompt: str, response: str | None = None, system: str | None = None,
                max_len: int | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of ``<s>[<|system|>...<|end|>]<|user|>{prompt}<|end|><|assistant|>{response}<|end|>``
    and the assistant mask (the response and its ``<|end|>``). Without a response the chat ends at
    ``<|assistant|>``: what a model continues to answer. Longer than ``max_len``: ``ValueError``."""
    ids, mask = tokenizer.apply_chat_template(chat_messages(prompt, response, system),
                                              add_generation_prompt=response is None)
    if max_len is not None and len(ids) > max_len:
        raise ValueError(f"a chat of {len(ids)} tokens is longer than the limit of {max_len} tokens (the model's "
                         f"context; prompt {prompt[:40]!r}...): shorten it, or use a model with a longer max_seq_len")
    return ids, mask


def chat_example(tokenizer: Tokenizer, prompt: str, response: str, system: str | None = None,
                 max_len: int | None = None) -> Example:
    """``(ids, labels)`` of the chat ``user: prompt, assistant: response``; ``labels[i] == ids[i]``
    on the response and its ``<|end|>``, ``-100`` elsewhere: a supervised fine-tuning example."""
    ids, mask = encode_chat(tokenizer, prompt, response, system, max_len)
    return ids, [i if m else IGNORE_INDEX for i, m in zip(ids, mask)]


def chat_batch(tokenizer: Tokenizer, prompts: Sequence[str], responses: Sequence[str], system: str | None = None,
               max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``response_mask`` (bool) ``(b, t)`` of the
    chats ``user: prompt, assistant: response``."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}")
    rows = [encode_chat(tokenizer, p, r, system, max_len) for p, r in zip(prompts, responses)]
    input_ids, attention_mask = pad_rows([ids for ids, _ in rows], tokenizer.pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "response_mask": pad_rows([mask for _, mask in rows])[0].bool()}


def response_uniforms(seed: int, prompt_index: int, sample_index: int, n: int) -> np.ndarray:
    """The ``n`` uniforms that sample ``sample_index`` of prompt ``prompt_index`` draws its tokens with."""
    return np.random.default_rng([seed, prompt_index, sample_index]).random(n)


def response_text(tokenizer: Tokenizer, new_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Decoded text of generated ids up to (not including) the first stop token."""
    stops = set(stop_ids)
    end = next((k for k, tok in enumerate(new_ids) if tok in stops), len(new_ids))
    return tokenizer.decode(new_ids[:end])


def _check_sampling_args(n_samples: int, temperature: float, max_new_tokens: int, batch_size: int) -> None:
    for name, value in (("n_samples", n_samples), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")


def sample_responses(model: Llama, tokenizer: Tokenizer, prompts: list[str], n_samples: int = 1,
                     temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                     max_new_tokens: int = 64, batch_size: int = 64, seed: int = 0, progress: bool = False,
                     system: str | None = None, stats: dict[str, Any] | None = None, compile: bool = False,
                     precision: str = "fp32") -> list[list[str]]:
    """``n_samples`` responses to each prompt: ``out[i][j]`` is sample ``j`` for ``prompts[i]``.

    A response is the text the model writes after ``<|assistant|>`` up to, not including,
    ``<|end|>`` (or ``</s>``); at most ``max_new_tokens`` tokens. Greedy when ``temperature == 0``
    (every sample the same), else sampled with optional ``top_k``/``top_p`` from the random stream
    of ``(seed, i, j)`` (see the module docstring: the result does not depend on ``batch_size``).
    Each prompt is run once and its cache serves its ``n_samples`` rows; ``batch_size`` rows decode
    together (``batch_size // n_samples`` prompts, at least one). ``compile`` and ``precision`` go to
    :func:`~minillama.generate.generate`. ``stats``, when given, receives ``responses``,
    ``new_tokens``, ``seconds`` and ``tokens_per_s``.
    """
    _check_sampling_args(n_samples, temperature, max_new_tokens, batch_size)
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of str")
    k = 1 if temperature == 0 else n_samples  # greedy: every sample is the same, computed once
    prompt_ids = [encode_chat(tokenizer, p, system=system)[0] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))  # stable: ties keep prompt order
    per_batch = max(1, batch_size // k)
    stop_ids = (tokenizer.end_id, tokenizer.eos_id)
    texts: list[list[str]] = [[] for _ in prompts]
    new_tokens, start = 0, time.perf_counter()
    with tqdm(total=len(prompts) * k, desc="sampling", unit="response", disable=not progress) as bar:
        for first in range(0, len(order), per_batch):
            batch = order[first:first + per_batch]
            ids, mask = pad_rows([prompt_ids[i] for i in batch], tokenizer.pad_id, left=True)
            uniforms = None if temperature == 0 else torch.from_numpy(
                np.stack([response_uniforms(seed, i, j, max_new_tokens) for i in batch for j in range(k)]))
            out = generate(model, ids.to(model.device), max_new_tokens, temperature, top_k, top_p, eos_id=stop_ids,
                           attention_mask=mask.to(model.device), pad_id=tokenizer.pad_id, uniforms=uniforms,
                           num_samples=k, compile=compile, precision=precision)
            for row, new_ids in enumerate(out[:, ids.shape[1]:].tolist()):
                written = next((n + 1 for n, tok in enumerate(new_ids) if tok in stop_ids), len(new_ids))
                texts[batch[row // k]].append(response_text(tokenizer, new_ids, stop_ids))
                new_tokens += written
            bar.update(len(batch) * k)
    if stats is not None:
        seconds = time.perf_counter() - start
        stats.update(responses=len(prompts) * k, new_tokens=new_tokens, seconds=seconds,
                     tokens_per_s=new_tokens / seconds if seconds > 0 else float("nan"))
    return [samples * n_samples for samples in texts] if k == 1 else texts


@torch.no_grad()
def response_logprobs(model: Llama, tokenizer: Tokenizer, prompts: list[str], responses: list[str],
                      batch_size: int = 32, system: str | None = None) -> torch.Tensor:
    """``log p(response + <|end|> | chat prompt)`` for each pair, ``(n,)`` float32 on the CPU.

    The response is tokenized as the chat template tokenizes an assistant turn (the tokens SFT
    trains on), which for a sampled response may differ from the ids it was sampled as."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}")
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # similar lengths share a batch
    out = torch.zeros(len(prompts), dtype=torch.float32)
    with eval_mode(model):
        for first in range(0, len(order), batch_size):
            idx = order[first:first + batch_size]
            batch = chat_batch(tokenizer, [prompts[i] for i in idx], [responses[i] for i in idx], system,
                               model.config.max_seq_len)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out[idx] = sequence_logprobs(model, **batch).float().cpu()
    return out
