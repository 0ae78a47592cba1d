"""Chapter 04 checks: ``causal_mask``, ``gqa_attention`` and ``kv_cache_update``.

Shapes: ``q (b, h, t, d)``, ``k, v (b, g, s, d)`` with ``h = g r``; ``attention_mask (b, s)``
(1 = token, 0 = padding); the ``t`` queries are the last ``t`` of the ``s`` positions. Caches
``(b, g, S, d)`` hold ``S >= s`` positions. ``gqa_attention`` is checked with the reference
``causal_mask`` swapped in, so that a wrong mask costs points only in the mask checks.
"""

from __future__ import annotations

import torch

from ...attention import build_attention_mask, eager_attention
from ..check import Checks, Learner, expect_pair, expect_tensor, fail, seeded

CHECKS = Checks()


def reference_causal_mask(t: int, s: int) -> torch.Tensor:
    """``(t, s)`` bool, True where query ``i`` (position ``s - t + i``) may see key ``j``."""
    mask = build_attention_mask(None, t, s)
    return torch.ones(t, s, dtype=torch.bool) if mask is None else mask[0, 0]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    mask = None if attention_mask is None else build_attention_mask(attention_mask, q.shape[2], k.shape[2])
    return eager_attention(q, k, v, mask, causal=True)


def _qkv(b: int, h: int, g: int, t: int, s: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = seeded(seed)
    return (torch.randn(b, h, t, d, generator=gen), torch.randn(b, g, s, d, generator=gen),
            torch.randn(b, g, s, d, generator=gen))


def _attend(learner: Learner, *args: torch.Tensor | None) -> torch.Tensor:
    gqa_attention = learner.function("gqa_attention")
    with learner.using_references(causal_mask=reference_causal_mask):
        return gqa_attention(*(a.clone() if a is not None else None for a in args))


@CHECKS.add(points=1, hint="query i may see key j when j <= i: torch.tril of a (t, t) ones matrix, as bool")
def causal_mask_square(learner: Learner) -> None:
    causal_mask = learner.function("causal_mask")
    for t in (1, 4, 7):
        expect_tensor(causal_mask(t, t), reference_causal_mask(t, t), f"causal_mask({t}, {t})", atol=0, rtol=0)


@CHECKS.add(points=1, hint="with s keys and the last t of them as queries, query i sits at position s - t + i "
                           "and may see keys j <= s - t + i (tril with diagonal=s - t)")
def causal_mask_for_decoding(learner: Learner) -> None:
    causal_mask = learner.function("causal_mask")
    for t, s in ((1, 5), (3, 7), (2, 3)):
        expect_tensor(causal_mask(t, s), reference_causal_mask(t, s), f"causal_mask({t}, {s})", atol=0, rtol=0)


@CHECKS.add(points=1, hint="softmax(q k^T / sqrt(d)) v with the causal mask: masked scores get -inf before "
                           "the softmax over the key axis")
def gqa_attention_multi_head(learner: Learner) -> None:
    q, k, v = _qkv(2, 4, 4, 6, 6, 8, seed=0)
    expect_tensor(_attend(learner, q, k, v), reference_attention(q, k, v), "gqa_attention with g = h")


@CHECKS.add(points=2, hint="query head j uses key/value head j // r (heads grouped as (g r)); "
                           "rearrange q to 'b g r t d' rather than repeating k and v")
def gqa_attention_grouped_heads(learner: Learner) -> None:
    for g in (2, 1):  # grouped-query and multi-query
        q, k, v = _qkv(2, 6, g, 5, 5, 8, seed=1 + g)
        expect_tensor(_attend(learner, q, k, v), reference_attention(q, k, v), f"gqa_attention with h=6, g={g}")


@CHECKS.add(points=2, hint="keys where attention_mask is 0 must get no weight: combine it, as "
                           "attention_mask[:, None, None, :], with the causal mask")
def gqa_attention_padding_mask(learner: Learner) -> None:
    q, k, v = _qkv(3, 4, 2, 6, 6, 8, seed=4)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    expected = reference_attention(q, k, v, attention_mask)
    real_queries = attention_mask.bool()[:, None, :, None]  # outputs at padding are never used
    expect_tensor(_attend(learner, q, k, v, attention_mask), expected, "gqa_attention with left padding",
                  where=real_queries)


@CHECKS.add(points=1, hint="a padding query may see no key at all, and a softmax over only -inf is NaN; let "
                           "every query see its own position (its output is ignored anyway)")
def gqa_attention_padding_stays_finite(learner: Learner) -> None:
    q, k, v = _qkv(2, 4, 2, 5, 5, 8, seed=5)
    attention_mask = torch.tensor([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
    out = _attend(learner, q, k, v, attention_mask)
    expect_tensor(out, reference_attention(q, k, v, attention_mask), "gqa_attention with left padding",
                  where=attention_mask.bool()[:, None, :, None])
    if not torch.isfinite(out).all():
        fail("gqa_attention returns NaN or inf at padding positions, which would spread through the next layer")


@CHECKS.add(points=1, hint="when t < s (decoding with a cache), the queries are the LAST t positions: build "
                           "the mask with causal_mask(t, s)")
def gqa_attention_queries_are_last_positions(learner: Learner) -> None:
    for t in (1, 3):
        q, k, v = _qkv(2, 4, 2, t, 7, 8, seed=6 + t)
        expect_tensor(_attend(learner, q, k, v), reference_attention(q, k, v), f"gqa_attention with t={t}, s=7")


@CHECKS.add(points=1, hint="write with cache_k[:, :, start:start + t] = k (in place, same for v) and leave "
                           "the other positions alone")
def kv_cache_update_writes_in_place(learner: Learner) -> None:
    kv_cache_update = learner.function("kv_cache_update")
    gen = seeded(8)
    cache_k, cache_v = torch.randn(2, 2, 10, 4, generator=gen), torch.randn(2, 2, 10, 4, generator=gen)
    k, v = torch.randn(2, 2, 3, 4, generator=gen), torch.randn(2, 2, 3, 4, generator=gen)
    expected_k, expected_v = cache_k.clone(), cache_v.clone()
    expected_k[:, :, 4:7], expected_v[:, :, 4:7] = k, v
    kv_cache_update(cache_k, cache_v, k.clone(), v.clone(), 4)
    expect_tensor(cache_k, expected_k, "cache_k after kv_cache_update(..., start=4)", atol=0, rtol=0)
    expect_tensor(cache_v, expected_v, "cache_v after kv_cache_update(..., start=4)", atol=0, rtol=0)


@CHECKS.add(points=1, hint="return the keys and values of positions 0 .. start + t - 1: "
                           "cache_k[:, :, :start + t], cache_v[:, :, :start + t]")
def kv_cache_update_returns_filled_prefix(learner: Learner) -> None:
    kv_cache_update = learner.function("kv_cache_update")
    gen = seeded(9)
    cache_k, cache_v = torch.zeros(1, 2, 8, 4), torch.zeros(1, 2, 8, 4)
    history_k, history_v = torch.randn(1, 2, 5, 4, generator=gen), torch.randn(1, 2, 5, 4, generator=gen)
    for start, end in ((0, 2), (2, 5)):
        keys, values = expect_pair(kv_cache_update(cache_k, cache_v, history_k[:, :, start:end].clone(),
                                                   history_v[:, :, start:end].clone(), start),
                                   "kv_cache_update", "(keys, values)")
        expect_tensor(keys, history_k[:, :, :end], f"keys returned at start={start}", atol=0, rtol=0)
        expect_tensor(values, history_v[:, :, :end], f"values returned at start={start}", atol=0, rtol=0)


@CHECKS.add(points=2, hint="decoding one token at a time through the cache must give what attention over the "
                           "whole sequence gives: write at start = number of tokens already cached")
def kv_cache_decoding_matches_full_attention(learner: Learner) -> None:
    kv_cache_update = learner.function("kv_cache_update")
    q, k, v = _qkv(2, 4, 2, 6, 6, 8, seed=10)
    full = reference_attention(q, k, v)
    cache_k, cache_v = torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8)
    steps = [(0, 3), (3, 4), (4, 5), (5, 6)]  # a prompt of 3, then one token at a time
    outputs = []
    for start, end in steps:
        keys, values = expect_pair(kv_cache_update(cache_k, cache_v, k[:, :, start:end].clone(),
                                                   v[:, :, start:end].clone(), start),
                                   "kv_cache_update", "(keys, values)")
        if not isinstance(keys, torch.Tensor) or keys.shape != (2, 2, end, 8):
            fail(f"kv_cache_update returned keys of shape {getattr(keys, 'shape', None)} after {end} tokens, "
                 f"expected (2, 2, {end}, 8)")
        outputs.append(reference_attention(q[:, :, start:end], keys, values))
    expect_tensor(torch.cat(outputs, dim=2), full, "attention decoded through kv_cache_update")
