"""Text generation on the KV cache: greedy, temperature, top-k and top-p (nucleus) sampling.

Prompts of different lengths are batched with *left* padding, so that every row's next token is
predicted at the same (last) column. A row that emits an end token leaves the batch and the cache:
a batch costs what its longest row costs. Tokens are drawn from a generator seeded with ``seed``
(:func:`sample_next`), or row by row from the uniform numbers each row brings
(:func:`inverse_cdf_sample`): then a row's tokens do not depend on the rows beside it, which is how
:func:`minillama.chat.sample_responses` makes every response reproducible alone.

Decoding pushes one token per row through the model, and a small model then spends its time on the
number of operations rather than on their size: one matmul against ``wq|wk|wv`` costs about what
one of the three does. So after the prompt, generate reads the model through
:func:`stacked_projections` (tiny preset, batch 1: about a quarter faster). The layers do not know;
every other forward (training, scoring, the prompt) keeps the separate matmuls, so a model gives the
same outputs with and without gradients. A stacked matmul rounds a little differently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .model import Llama
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


def generate(model: Llama, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | Sequence[int] | None = None,
             use_cache: bool = True, seed: int | None = None, attention_mask: torch.Tensor | None = None,
             pad_id: int = 0, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Continue each prompt of ``input_ids (b, t)`` by up to ``max_new_tokens`` tokens.

    ``attention_mask (b, t)`` marks real prompt tokens (1) and left padding (0). A row that emits
    ``eos_id`` (one id, or several) is padded with ``pad_id`` afterwards; generation stops early once
    every row has. Sampled tokens come from a generator seeded with ``seed`` (the same seed, the same
    tokens), or, given ``uniforms (b, max_new_tokens)``, row by row from those numbers (module
    docstring). Returns ``(b, t + n)`` with ``n <= max_new_tokens``.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    b, t = input_ids.shape
    total = t + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"prompt length {t} + max_new_tokens {max_new_tokens} exceeds "
                         f"max_seq_len={model.config.max_seq_len}")
    if uniforms is not None and tuple(uniforms.shape) != (b, max_new_tokens):
        raise ValueError(f"uniforms must be (batch, max_new_tokens) = {(b, max_new_tokens)}, "
                         f"got {tuple(uniforms.shape)}")
    device = input_ids.device
    uniforms = None if uniforms is None else uniforms.to(device)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    stops = None if eos_id is None else torch.as_tensor([eos_id] if isinstance(eos_id, int) else list(eos_id),
                                                        device=device)
    # Ids and mask live in buffers of the final width, filled column by column: concatenating
    # would copy the whole sequence at every step. They are made outside inference mode so that
    # the caller may use the result in autograd later (e.g. as labels).
    ids = torch.full((b, total), pad_id, dtype=input_ids.dtype, device=device)
    ids[:, :t] = input_ids
    mask = None
    if attention_mask is not None:
        mask = torch.ones((b, total), dtype=attention_mask.dtype, device=device)
        mask[:, :t] = attention_mask
    rows = slice(None)  # the rows still running: all of them, until one finishes
    end = t
    with eval_mode(model), torch.inference_mode(), contextlib.ExitStack() as stack:
        cache = model.new_cache(b, total) if use_cache else None
        for step in range(max_new_tokens):
            start = end - 1 if cache is not None and step else 0  # with the cache only the newest token goes in
            if cache is not None and step == 1:  # one token per row from here on
                stack.enter_context(stacked_projections(model))
            logits = model(ids[rows, start:end], attention_mask=None if mask is None else mask[:, :end],
                           cache=cache)[:, -1]
            if uniforms is None:
                token = sample_next(logits, temperature, top_k, top_p, generator)
            else:
                token = inverse_cdf_sample(logits, uniforms[rows, step], temperature, top_k, top_p)
            ids[rows, end] = token
            end += 1
            if stops is None:
                continue
            running = ~torch.isin(token, stops)
            n_running = int(running.sum())
            if n_running == 0:
                break
            if n_running < len(token):
                rows = torch.arange(b, device=device)[rows][running]
                mask = None if mask is None else mask[running]
                if cache is not None:
                    cache.keep_rows(running)
    return ids[:, :end]
