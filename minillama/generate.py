"""Text generation on the KV cache: greedy, temperature, top-k and top-p (nucleus) sampling.

Prompts of different lengths are batched with *left* padding, so that every row's next token is
predicted at the same (last) column. A row that emits an end token leaves the batch and the cache:
a batch costs what its longest row costs. Tokens are drawn from a generator seeded with ``seed``
(:func:`sample_next`), or row by row from the uniform numbers each row brings
(:func:`inverse_cdf_sample`): then a row's tokens do not depend on the rows beside it, which is how
:func:`minillama.chat.sample_responses` makes every response reproducible alone.

Two phases. The *prefill* runs each prompt through the model once, all its positions together,
and fills the KV cache; when a prompt is to be answered ``k`` times, its cache rows are then
copied ``k`` times (:meth:`~minillama.attention.KVCache.repeat_rows`) instead of running the
prompt ``k`` times. *Decoding* then pushes one token per row per step through
:func:`decode_step`, on a *static* cache: every step has the same shapes (the new keys are
written at a column given as a tensor, attention reads every column under a mask), which lets
``torch.compile`` trace the step once and reuse it for every token.

A step of a small model spends its time on the number of operations rather than on their size:
one matmul against ``wq|wk|wv`` costs about what one of the three does. So decoding reads the
model through :func:`stacked_projections` (tiny preset, batch 1: about a quarter faster). The
layers do not know; every other forward (training, scoring, the prefill) keeps the separate
matmuls, so a model gives the same outputs with and without gradients. A stacked matmul rounds a
little differently.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache
from .compiler import compile_or_eager
from .model import Llama
from .precision import autocast
from .sequences import eval_mode


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to ``-inf`` every logit outside the top ``k`` and outside the smallest set of tokens whose
    probability reaches ``top_p``. ``(b, v) -> (b, v)``; the most likely token always survives."""
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be None or in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token of each row from ``logits (b, v)``: argmax when ``temperature == 0``,
    otherwise a draw from ``softmax(logits / temperature)`` after top-k/top-p filtering. ``-> (b,)``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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


class _Share(nn.Module):
    """Stands in for one of the linear layers that read the same input: its slice of their stacked
    matmul, computed once per input tensor. Called without nn.Module's hooks, which cost more here
    than the slice."""

    def __init__(self, shared: dict, weight: torch.Tensor, sizes: list[int], index: int) -> None:
        super().__init__()
        self.shared, self.weight, self.sizes, self.index = shared, weight, sizes, index

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared.get("input") is not x:
            self.shared.update(input=x, outputs=F.linear(x, self.weight).split(self.sizes, dim=-1))
        return self.shared["outputs"][self.index]


@contextlib.contextmanager
def stacked_projections(model: Llama) -> Iterator[Llama]:
    """``with stacked_projections(model):`` each block's ``wq, wk, wv`` and ``w1, w3`` are served from
    one stacked matmul each (module docstring); the layers are put back on exit."""
    swapped = []
    for block in model.layers:
        for module, names in ((block.attention, ("wq", "wk", "wv")), (block.feed_forward, ("w1", "w3"))):
            layers = [getattr(module, name) for name in names]
            # The stacked copy is kept for the next call while every weight is the same tensor with the
            # same version counter (an optimizer step, load_state_dict or .to() makes a new one).
            key = [(layer.weight.data_ptr(), layer.weight._version) for layer in layers]
            if getattr(module, "_stacked", (None,))[0] != key:
                module._stacked = (key, torch.cat([layer.weight for layer in layers]).detach())
            shared, sizes = {}, [layer.out_features for layer in layers]
            for index, name in enumerate(names):
                setattr(module, name, _Share(shared, module._stacked[1], sizes, index))
            swapped.append((module, names, layers))
    try:
        yield model
    finally:
        for module, names, layers in swapped:
            for name, layer in zip(names, layers):
                setattr(module, name, layer)


def decode_step(model: Llama, tokens: torch.Tensor, position_ids: torch.Tensor, key_mask: torch.Tensor,
                cache: KVCache) -> torch.Tensor:
    """Logits ``(b, v)`` of the next token after ``tokens (b, 1)`` at ``position_ids (b, 1)``, on a
    static cache: the new keys and values go to column ``cache.write_at``, and each row attends to
    the columns ``key_mask (b, s)`` allows (``s``: the cache's capacity). No shape and no Python number
    changes from one token to the next, so ``torch.compile`` traces it once."""
    hidden = model.trunk(model.tok_embeddings(tokens), position_ids, key_mask[:, None, None, :], cache)
    return model.output(hidden)[:, -1]


@functools.cache
def decode_step_for(compiled: bool, device_type: str) -> Callable[..., torch.Tensor]:
    """:func:`decode_step`, compiled once per process when asked and possible (the batch axis is
    dynamic: rows that finish leave the batch without a recompilation), else as it is."""
    if not compiled:
        return decode_step
    compiled_step = compile_or_eager(decode_step, True, device_type, "generate(compile=True)")
    if compiled_step is decode_step:
        return decode_step

    def step(model: Llama, tokens: torch.Tensor, position_ids: torch.Tensor, key_mask: torch.Tensor,
             cache: KVCache) -> torch.Tensor:
        if tokens.shape[0] > 1:
            for tensor in (tokens, position_ids, key_mask):
                torch._dynamo.mark_dynamic(tensor, 0)
            for tensor in (*cache.k, *cache.v):
                torch._dynamo.mark_dynamic(tensor, 0)
        return compiled_step(model, tokens, position_ids, key_mask, cache)

    return step


def generate(model: Llama, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | Sequence[int] | None = None,
             use_cache: bool = True, seed: int | None = None, attention_mask: torch.Tensor | None = None,
             pad_id: int = 0, uniforms: torch.Tensor | None = None, num_samples: int = 1, compile: bool = False,
             precision: str = "fp32") -> torch.Tensor:
    """Continue each prompt of ``input_ids (b, t)`` by up to ``max_new_tokens`` tokens, ``num_samples``
    times: returns ``(b k, t + n)`` with ``n <= max_new_tokens``, the ``k = num_samples`` rows of prompt
    ``i`` at ``i k .. i k + k - 1``.

    Each prompt goes through the model once (the prefill); its KV cache is then copied to its
    ``k`` rows, which decode one token per step through :func:`decode_step` (compiled with
    ``compile=True``). ``attention_mask (b, t)`` marks real prompt tokens (1) and left padding (0).
    A row that emits ``eos_id`` (one id, or several) is padded with ``pad_id`` afterwards and leaves
    the batch; generation stops once every row has. Sampled tokens come from a generator seeded
    with ``seed`` (the same seed, the same tokens), or, given ``uniforms (b k, max_new_tokens)``, row
    by row from those numbers (module docstring). ``precision``: see :mod:`minillama.precision`.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    b, t = input_ids.shape
    n_rows, total = b * num_samples, t + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"prompt length {t} + max_new_tokens {max_new_tokens} exceeds "
                         f"max_seq_len={model.config.max_seq_len}")
    if uniforms is not None and tuple(uniforms.shape) != (n_rows, max_new_tokens):
        raise ValueError(f"uniforms must be (batch * num_samples, max_new_tokens) = {(n_rows, max_new_tokens)}, "
                         f"got {tuple(uniforms.shape)}")
    if use_cache and model.max_batch_size is not None and n_rows > model.max_batch_size:
        raise ValueError(f"batch {b} x num_samples {num_samples} = {n_rows} rows exceeds "
                         f"max_batch_size={model.max_batch_size}")
    device = input_ids.device
    uniforms = None if uniforms is None else uniforms.to(device)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    stops = None if eos_id is None else torch.as_tensor([eos_id] if isinstance(eos_id, int) else list(eos_id),
                                                        device=device)
    # Ids and mask live in buffers of the final width, filled column by column: concatenating
    # would copy the whole sequence at every step. They are made outside inference mode so that
    # the caller may use the result in autograd later (e.g. as labels).
    # Row r holds sample r % k of prompt r // k.
    ids = torch.full((n_rows, total), pad_id, dtype=input_ids.dtype, device=device)
    ids[:, :t] = input_ids.repeat_interleave(num_samples, dim=0)
    mask = torch.zeros((n_rows, total), dtype=torch.long, device=device)
    mask[:, :t] = 1 if attention_mask is None else attention_mask.repeat_interleave(num_samples, dim=0)
    with eval_mode(model), torch.inference_mode(), autocast(precision, device), contextlib.ExitStack() as stack:
        cache = model.new_cache(b, total) if use_cache else None
        first = slice(None, None, num_samples)  # one row per prompt
        logits = model(ids[first, :t], attention_mask=None if attention_mask is None else mask[first, :t], cache=cache)
        logits = logits[:, -1].repeat_interleave(num_samples, dim=0)
        if cache is not None:
            cache.repeat_rows(num_samples)
            cache.write_at = torch.zeros(1, dtype=torch.long, device=device)
            step_fn = decode_step_for(compile, device.type)
            stack.enter_context(stacked_projections(model))  # one token per row: stacking pays (module docstring)
        next_position = mask.sum(-1, keepdim=True)  # RoPE positions count real tokens only
        rows = torch.arange(n_rows, device=device)  # the rows still running
        key_mask = mask.bool()  # the running rows' mask, kept apart so no step gathers it again
        end = t
        for step in range(max_new_tokens):
            if step and cache is None:
                logits = model(ids[rows, :end], attention_mask=None if attention_mask is None else mask[rows, :end])
                logits = logits[:, -1]
            elif step:  # the newest token goes in, at column end - 1
                cache.write_at.fill_(end - 1)
                logits = step_fn(model, ids[rows, end - 1:end], next_position, key_mask, cache)
                next_position = next_position + 1
                cache.advance(1)
            if uniforms is None:
                token = sample_next(logits, temperature, top_k, top_p, generator)
            else:
                token = inverse_cdf_sample(logits, uniforms[rows, step], temperature, top_k, top_p)
            ids[rows, end] = token
            mask[rows, end] = 1
            key_mask[:, end] = True
            end += 1
            if stops is None:
                continue
            running = ~torch.isin(token, stops)
            n_running = int(running.sum())
            if n_running == 0:
                break
            if n_running < len(token):
                rows, next_position, key_mask = rows[running], next_position[running], key_mask[running]
                if cache is not None:
                    cache.keep_rows(running)
    return ids[:, :end]
