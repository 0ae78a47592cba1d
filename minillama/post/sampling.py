"""Chat responses from a model, many prompts at once, and the log-probability of a given response.

Sampling (:func:`sample_responses`) runs prompts in batches on the KV cache. Prompts of different
lengths are padded on the *left*, so every row predicts its next token at the same last column,
and the ``attention_mask`` keeps the padding out of attention and out of the RoPE positions
(each prompt's first real token is position 0, as when it runs alone). Prompts are sorted by
length before batching, so that a batch holds prompts of similar length and little padding.
A row stops at ``<|end|>`` (or ``</s>``); finished rows are dropped from the batch and from the
cache, so a batch costs what its longest answers cost, not ``max_new_tokens`` for every row.

Random numbers belong to the *response*, not to the batch: draw ``k`` of sample ``j`` of prompt
``i`` is ``u[k]`` of the uniform stream ``numpy.random.default_rng([seed, i, j])``, and the token
is the inverse of the filtered distribution's CDF at ``u[k]``. So a response depends only on
``(seed, i, j)``: not on ``batch_size``, the sorting, or which other prompts share its batch
(up to float round-off in the padded forward pass, which can move a CDF boundary by ~1e-7).
One response can be regenerated alone, and rejection sampling with K samples gets the same K
responses on any machine size. Greedy decoding (``temperature == 0``) computes each prompt once
and repeats it ``n_samples`` times.

Scoring (:func:`response_logprobs`, :func:`sequence_logprobs`) gives ``log p(response | prompt)``:
the sum over the response's tokens and its closing ``<|end|>`` (the tokens the SFT loss trains),
as DPO needs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attention import KVCache
from ..generate import filter_logits
from ..model import Llama
from ..tokenizer import Tokenizer


def chat_messages(prompt: str, response: str | None = None, system: str | None = None) -> list[dict[str, str]]:
    """The conversation ``[system], user: prompt, [assistant: response]`` as template messages."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def chat_prompt_ids(tokenizer: Tokenizer, prompt: str, system: str | None = None) -> list[int]:
    """Token ids of ``<s>[<|system|>...<|end|>]<|user|>{prompt}<|end|><|assistant|>``: what the
    model continues to answer ``prompt``."""
    return tokenizer.apply_chat_template(chat_messages(prompt, system=system), add_generation_prompt=True)[0]


def inverse_cdf_sample(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """One token per row of ``logits (b, v)`` from ``softmax(logits / temperature)`` after top-k /
    top-p filtering, chosen by the uniforms ``(b,)`` in ``[0, 1)``: the first token whose cumulative
    probability exceeds ``u``. A given ``u`` always picks the same token, whatever the batch."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1).double()
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]  # cdf[-1] is 1 up to round-off
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp(max=logits.shape[-1] - 1)


def _check_sampling_args(n_samples: int, temperature: float, max_new_tokens: int, batch_size: int) -> None:
    for name, value, low in (("n_samples", n_samples, 1), ("max_new_tokens", max_new_tokens, 1),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")


def _keep_rows(cache: KVCache, keep: torch.Tensor) -> None:
    """Drop the finished rows of every layer's cache (a smaller batch for the remaining steps)."""
    cache.k = cache.k[:, keep]
    cache.v = cache.v[:, keep]


@torch.no_grad()
def decode_batch(model: Llama, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: Sequence[int],
                 uniforms: torch.Tensor | None = None, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, pad_id: int = 0) -> list[list[int]]:
    """New tokens for each prompt, up to and including the first of ``stop_ids``.

    Greedy when ``uniforms`` is None, else row ``i`` draws its ``k``-th token with
    ``uniforms[i, k]`` (``(b, max_new_tokens)``, see :func:`inverse_cdf_sample`). One forward
    pass per step over the rows still running, on a left-padded KV cache."""
    b, t = len(prompt_ids), max(len(p) for p in prompt_ids)
    if t + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt of {t} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
                         f"max_seq_len={model.config.max_seq_len}; allowed: a shorter prompt or fewer new tokens")
    device = model.device
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        ids[row, t - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, t - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    # The cache's batch limit is a memory guard for the config's users, not part of the model.
    config = model.config.replace(max_batch_size=max(b, model.config.max_batch_size))
    cache = KVCache(config, b, t + max_new_tokens, device=device, dtype=model.dtype)
    stop = torch.as_tensor(list(stop_ids), device=device)
    rows = torch.arange(b, device=device)  # which prompt each cache row still answers
    out: list[list[int]] = [[] for _ in range(b)]
    step_input = ids
    for k in range(max_new_tokens):
        # After the prompt every input is a sampled token, in range by construction.
        logits = model(step_input, attention_mask=mask, cache=cache, check_ids=k == 0)[:, -1]
        if uniforms is None:
            token = logits.argmax(-1)
        else:
            token = inverse_cdf_sample(logits, uniforms[rows.cpu(), k], temperature, top_k, top_p)
        for row, tok in zip(rows.tolist(), token.tolist()):
            out[row].append(tok)
        running = ~torch.isin(token, stop)
        if not bool(running.any()):
            break
        if not bool(running.all()):
            _keep_rows(cache, running)
            rows, token, mask = rows[running], token[running], mask[running]
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        step_input = token[:, None]
    return out


def response_text(tokenizer: Tokenizer, new_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Decoded text of generated ids up to (not including) the first stop token."""
    stops = set(stop_ids)
    end = next((k for k, tok in enumerate(new_ids) if tok in stops), len(new_ids))
    return tokenizer.decode(new_ids[:end])


def response_uniforms(seed: int, prompt_index: int, sample_index: int, n: int) -> np.ndarray:
    """The ``n`` uniforms that sample ``sample_index`` of prompt ``prompt_index`` draws its tokens with."""
    return np.random.default_rng([seed, prompt_index, sample_index]).random(n)


def sample_responses(model: Llama, tokenizer: Tokenizer, prompts: list[str], n_samples: int = 1,
                     temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                     max_new_tokens: int = 64, batch_size: int = 64, seed: int = 0, progress: bool = False,
                     system: str | None = None, stats: dict[str, Any] | None = None) -> list[list[str]]:
    """``n_samples`` responses to each prompt: ``out[i][j]`` is sample ``j`` for ``prompts[i]``.

    A response is the text the model writes after ``<|assistant|>`` up to, not including,
    ``<|end|>`` (or ``</s>``); at most ``max_new_tokens`` tokens. Greedy when ``temperature == 0``
    (every sample the same), else sampled with optional ``top_k``/``top_p`` from the random stream
    of ``(seed, i, j)`` (see the module docstring: the result does not depend on ``batch_size``).
    ``stats``, when given, receives ``responses``, ``new_tokens``, ``seconds`` and ``tokens_per_s``.
    """
    _check_sampling_args(n_samples, temperature, max_new_tokens, batch_size)
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of str")
    greedy = temperature == 0
    prompt_ids = [chat_prompt_ids(tokenizer, p, system) for p in prompts]
    jobs = [(i, j) for i in range(len(prompts)) for j in range(1 if greedy else n_samples)]
    order = sorted(range(len(jobs)), key=lambda k: len(prompt_ids[jobs[k][0]]))  # stable: ties keep job order
    stop_ids = (tokenizer.end_id, tokenizer.eos_id)
    texts: list[str] = [""] * len(jobs)
    new_tokens, start = 0, time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(jobs), desc="sampling", unit="response", disable=not progress) as bar:
            for first in range(0, len(order), batch_size):
                batch = order[first:first + batch_size]
                uniforms = None if greedy else torch.from_numpy(
                    np.stack([response_uniforms(seed, *jobs[k], max_new_tokens) for k in batch]))
                generated = decode_batch(model, [prompt_ids[jobs[k][0]] for k in batch], max_new_tokens, stop_ids,
                                         uniforms, temperature, top_k, top_p, tokenizer.pad_id)
                for k, new_ids in zip(batch, generated):
                    texts[k] = response_text(tokenizer, new_ids, stop_ids)
                    new_tokens += len(new_ids)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    if stats is not None:
        seconds = time.perf_counter() - start
        stats.update(responses=len(jobs), new_tokens=new_tokens, seconds=seconds,
                     tokens_per_s=new_tokens / seconds if seconds > 0 else float("nan"))
    out: list[list[str]] = [[] for _ in prompts]
    for (i, _), text in zip(jobs, texts):
        out[i].append(text)
    return [samples * n_samples for samples in out] if greedy else out


# ---------------------------------------------------------------------------------- log-probabilities
def sequence_logprobs(model: Llama, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      response_mask: torch.Tensor) -> torch.Tensor:
    """``sum_i log p(input_ids[:, i] | input_ids[:, :i])`` over the positions ``response_mask`` marks:
    ``(b, t), (b, t), (b, t) -> (b,)``. Differentiable (for DPO); padding may be on either side.
    ``response_mask[:, 0]`` is ignored: the first token has no context to be predicted from."""
    if input_ids.shape != response_mask.shape:
        raise ValueError(f"response_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(response_mask.shape)}")
    logits = model(input_ids, attention_mask=attention_mask)[:, :-1]  # (b, t-1, v): position i predicts i+1
    targets = input_ids[:, 1:]
    token_logp = -F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    weights = response_mask[:, 1:].to(token_logp.dtype).flatten()
    return (token_logp * weights).view(targets.shape).sum(-1)


def chat_response_batch(tokenizer: Tokenizer, prompts: Sequence[str], responses: Sequence[str],
                        system: str | None = None, max_seq_len: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``response_mask`` ``(b, t)`` of the chats
    ``user: prompt, assistant: response``; the response mask covers the answer and its ``<|end|>``."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}")
    rows = [tokenizer.apply_chat_template(chat_messages(p, r, system)) for p, r in zip(prompts, responses)]
    t = max(len(ids) for ids, _ in rows)
    if max_seq_len is not None and t > max_seq_len:
        raise ValueError(f"a chat of {t} tokens exceeds max_seq_len={max_seq_len}")
    input_ids = torch.full((len(rows), t), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), t), dtype=torch.long)
    response_mask = torch.zeros((len(rows), t), dtype=torch.bool)
    for row, (ids, mask) in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        response_mask[row, :len(ids)] = torch.tensor(mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


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
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(order), batch_size):
            idx = order[first:first + batch_size]
            batch = chat_response_batch(tokenizer, [prompts[i] for i in idx], [responses[i] for i in idx], system,
                                        model.config.max_seq_len)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out[idx] = sequence_logprobs(model, **batch).float().cpu()
    finally:
        model.train(was_training)
    return out
