"""Text generation on the KV cache: greedy, temperature, top-k and top-p (nucleus) sampling.

Prompts of different lengths are batched with *left* padding, so that every row's next token is
predicted at the same (last) column and one forward pass per step serves the whole batch.
"""

from __future__ import annotations

import torch

from .model import Llama


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


def generate(model: Llama, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             use_cache: bool = True, seed: int | None = None, attention_mask: torch.Tensor | None = None,
             pad_id: int = 0) -> torch.Tensor:
    """Continue each prompt of ``input_ids (b, t)`` by up to ``max_new_tokens`` tokens.

    ``attention_mask (b, t)`` marks real prompt tokens (1) and left padding (0). Rows that emit
    ``eos_id`` are padded with ``pad_id`` afterwards; generation stops early once every row has.
    Returns ``(b, t + n)`` with ``n <= max_new_tokens``. With the same ``seed``, sampling repeats.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    b, t = input_ids.shape
    total = t + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"prompt length {t} + max_new_tokens {max_new_tokens} exceeds "
                         f"max_seq_len={model.config.max_seq_len}")
    device = input_ids.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    # Ids and mask live in buffers of the final width, filled column by column: concatenating
    # would copy the whole sequence at every step. They are made outside inference mode so that
    # the caller may use the result in autograd later (e.g. as labels).
    ids = torch.full((b, total), pad_id, dtype=input_ids.dtype, device=device)
    ids[:, :t] = input_ids
    mask = None
    if attention_mask is not None:
        mask = torch.ones((b, total), dtype=attention_mask.dtype, device=device)
        mask[:, :t] = attention_mask
    was_training = model.training
    model.eval()
    end = t
    try:
        with torch.inference_mode():
            cache = model.new_cache(b, total) if use_cache else None
            finished = torch.zeros(b, dtype=torch.bool, device=device) if eos_id is not None else None
            for _ in range(max_new_tokens):
                # With the cache only the newest token goes in after the prompt. Only the prompt
                # needs the id range check: every later input was sampled from the model's own
                # vocabulary, and the check costs two reads from the device per step.
                start = end - 1 if use_cache and end > t else 0
                logits = model(ids[:, start:end], attention_mask=None if mask is None else mask[:, :end],
                               cache=cache, check_ids=end == t)
                next_token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
                if finished is not None:
                    next_token = next_token.masked_fill(finished, pad_id)
                ids[:, end] = next_token
                end += 1
                if finished is not None:
                    finished |= next_token == eos_id
                    if bool(finished.all()):
                        break
    finally:
        model.train(was_training)
    return ids[:, :end]
