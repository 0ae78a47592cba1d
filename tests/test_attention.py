"""Attention: grouped heads, masks, backends and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from minillama.attention import KVCache, build_attention_mask, eager_attention, sdpa_attention, triton_attention
from minillama.model import Llama


def qkv(b: int, h: int, g: int, t: int, s: int, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, t, d, generator=gen), torch.randn(b, g, s, d, generator=gen),
            torch.randn(b, g, s, d, generator=gen))


def reference_attention(q, k, v, allowed: torch.Tensor) -> torch.Tensor:
    """Textbook attention with K/V repeated per query head: head ``i`` reads kv head ``i // r``
    (transformers' ``repeat_kv`` order). ``allowed (b|1, 1, t, s)``."""
    r = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


HEADS = [(4, 4), (4, 2), (8, 2), (4, 1)]
HEAD_IDS = ["mha", "gqa2", "gqa4", "mqa"]


@pytest.mark.parametrize("h, g", HEADS, ids=HEAD_IDS)
@pytest.mark.parametrize("t, s", [(6, 6), (3, 7), (1, 5)], ids=["prefill", "chunk", "decode"])
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
def test_backends_equal_the_textbook_formula(h: int, g: int, t: int, s: int, padded: bool) -> None:
    q, k, v = qkv(2, h, g, t, s)
    attention_mask = torch.ones(2, s, dtype=torch.long)
    if padded:
        attention_mask[1, :2] = 0  # left padding in the second row
    mask = build_attention_mask(attention_mask if padded else None, t, s)
    allowed = mask if mask is not None else torch.ones(1, 1, t, s, dtype=torch.bool)
    expected = reference_attention(q, k, v, allowed)
    for backend in (eager_attention, sdpa_attention):
        torch.testing.assert_close(backend(q, k, v, mask), expected, rtol=1e-5, atol=1e-6)


def test_causal_mask_aligns_queries_to_the_end() -> None:
    # Three new queries after four cached keys: query i sees keys 0 .. 4 + i.
    mask = build_attention_mask(None, 3, 7)
    assert mask.shape == (1, 1, 3, 7)
    assert mask[0, 0].long().tolist() == [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]


def test_padding_mask_hides_pad_keys_and_keeps_pad_queries_finite() -> None:
    mask = build_attention_mask(torch.tensor([[0, 0, 1, 1]]), 4, 4)
    assert mask[0, 0].long().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    q, k, v = qkv(1, 2, 2, 4, 4)
    assert torch.isfinite(eager_attention(q, k, v, mask)).all()
    assert torch.isfinite(sdpa_attention(q, k, v, mask)).all()


def test_no_mask_needed_for_one_step_without_padding() -> None:
    assert build_attention_mask(None, 1, 9) is None
    with pytest.raises(ValueError, match="attention_mask must cover all 5 key positions"):
        build_attention_mask(torch.ones(1, 4), 1, 5)


def test_triton_backend_refuses_padding_masks() -> None:
    q, k, v = qkv(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="attn_backend='sdpa' or 'eager'"):
        triton_attention(q, k, v, build_attention_mask(torch.ones(1, 3), 3, 3))


# --------------------------------------------------------------------------- KV cache
def test_cache_update_appends_per_layer(tiny_config) -> None:
    config = tiny_config(n_kv_heads=2)
    cache = KVCache(config, batch_size=2, max_seq_len=6)
    assert len(cache.k) == 2 and cache.k[0].shape == (2, 2, 6, config.head_dim)
    assert cache.nbytes == 2 * 2 * 2 * 2 * 6 * config.head_dim * 4
    k1, v1 = torch.ones(2, 2, 4, config.head_dim), 2 * torch.ones(2, 2, 4, config.head_dim)
    keys, values = cache.update(0, k1, v1)
    assert keys.shape == (2, 2, 4, config.head_dim) and torch.equal(values, v1)
    cache.advance(4)
    keys, _ = cache.update(0, 3 * torch.ones(2, 2, 1, config.head_dim), torch.zeros(2, 2, 1, config.head_dim))
    assert keys[:, :, :, 0].tolist() == [[[1, 1, 1, 1, 3]] * 2] * 2
    assert cache.k[1].abs().sum() == 0  # layer 1 untouched


def test_cache_overflow_is_a_value_error(random_llama) -> None:
    model = random_llama()
    cache = model.new_cache(batch_size=1, max_seq_len=8)
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"KV cache overflow: capacity max_seq_len=8, holds 6 .* 3 more"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    assert cache.length == 6  # the refused call left the cache as it was


def test_cache_limits_are_checked(tiny_config, random_llama) -> None:
    config = tiny_config()
    with pytest.raises(ValueError, match="KVCache batch_size must be >= 1"):
        KVCache(config, batch_size=0)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, max_batch_size=8\]"):
        Llama(config, max_batch_size=8).new_cache(9)
    with pytest.raises(ValueError, match=r"max_seq_len must be in \[1, config.max_seq_len=64\]"):
        KVCache(config, batch_size=1, max_seq_len=65)
    model = random_llama()
    with pytest.raises(ValueError, match="KV cache was made for batch 2, got batch 1"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=model.new_cache(2))


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
def test_chunked_prefill_with_cache_equals_full_forward(random_llama, backend: str, padded: bool) -> None:
    model = random_llama(n_kv_heads=2)
    model.attn_backend = backend
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :3] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask if padded else None)
        cache, pieces, start = model.new_cache(2, 12), [], 0
        for n in (5, 3, 1, 1, 2):  # uneven chunks: queries are the last t of s keys
            chunk_mask = mask[:, :start + n] if padded else None
            pieces.append(model(ids[:, start:start + n], attention_mask=chunk_mask, cache=cache))
            start += n
    real = mask.bool()
    torch.testing.assert_close(torch.cat(pieces, dim=1)[real], full[real], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- input checks
def test_sequence_longer_than_max_seq_len_is_refused(random_llama) -> None:
    model = random_llama()
    with pytest.raises(ValueError, match="sequence length 65 exceeds max_seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 60, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="sequence length 66 exceeds max_seq_len=64"):
        model(torch.zeros(1, 6, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("bad", [97, -1])
def test_token_ids_out_of_range_name_vocab_size(random_llama, bad: int) -> None:
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=97\)"):
        random_llama()(torch.tensor([[1, 2, bad]]))


def test_malformed_inputs_are_refused(random_llama) -> None:
    model = random_llama()
    with pytest.raises(ValueError, match="input_ids must be \\(batch, time\\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids must be int64 or int32"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, cached \+ new\) = \(1, 5\)"):
        model(torch.zeros(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="attn_backend must be one of"):
        model.attn_backend = "flash"
