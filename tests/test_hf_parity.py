"""Logit parity with transformers' LlamaForCausalLM, both ways, on random weights.

Each case changes one thing from a 2-layer MHA model (plus one case that combines them); every case
runs a dense batch and a left-padded one through both attention backends. Sequences are 40 tokens,
past the 16-token original context of the dynamic and llama3 scalings, so the scaling is exercised
(a separate test checks that the scaled cases really differ from the default RoPE at this length).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from minillama.hf import from_hf, from_hf_config_dict, to_hf, to_hf_config_dict
from minillama.model import Llama, positions_from_mask

TOLERANCE = 1e-5
T = 40
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
CASES = {
    "mha": dict(),
    "gqa-2to1": dict(n_kv_heads=2),
    "gqa-4to1": dict(n_heads=8, n_kv_heads=2),
    "mqa": dict(n_kv_heads=1),
    "rope-linear": dict(rope_scaling=dict(rope_type="linear", factor=4.0)),
    # original context 16 < T = 40 < max_seq_len 64: the NTK base grows for this length.
    "rope-dynamic": dict(rope_scaling=dict(rope_type="dynamic", factor=2.0, original_max_position_embeddings=16)),
    "rope-llama3": dict(rope_scaling=LLAMA3),
    "tied": dict(tie_embeddings=True),
    "gqa-llama3-tied": dict(n_heads=8, n_kv_heads=2, rope_scaling=LLAMA3, tie_embeddings=True),
}
BACKENDS = ["eager", "sdpa"]


def batches(vocab_size: int = 97) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A dense batch ``(2, T)`` and a left-padded one ``(3, T)`` with its mask. The padded batch's
    first row is full length, so both batches reach the same largest position (transformers keeps the
    dynamic-RoPE frequencies of the longest sequence it has seen; minillama recomputes per call)."""
    gen = torch.Generator().manual_seed(11)
    dense = torch.randint(0, vocab_size, (2, T), generator=gen)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, :5], mask[2, :17] = 0, 0
    padded = torch.randint(1, vocab_size, (3, T), generator=gen) * mask
    return dense, padded, mask


def max_diffs(model: Llama, hf: transformers.LlamaForCausalLM) -> tuple[float, float]:
    """Max abs logit difference on the dense batch and on the real tokens of the padded batch."""
    dense, padded, mask = batches(model.config.vocab_size)
    with torch.no_grad():
        dense_diff = (model(dense) - hf(dense).logits).abs().max().item()
        ours = model(padded, attention_mask=mask)
        theirs = hf(padded, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    return dense_diff, (ours - theirs)[mask.bool()].abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_to_hf_gives_the_same_logits(random_llama, case: str, backend: str) -> None:
    model = random_llama(seed=1, **CASES[case])
    model.attn_backend = backend
    hf = to_hf(model)
    hf.set_attn_implementation(backend)
    if model.config.tie_embeddings:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    dense, padded = max_diffs(model, hf)
    assert dense <= TOLERANCE and padded <= TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_from_hf_gives_the_same_logits(tiny_config, random_weights, case: str, backend: str) -> None:
    config = tiny_config(**CASES[case])
    # A transformers model made by transformers, from a plain transformers config (no minillama entry).
    hf_config = {k: v for k, v in to_hf_config_dict(config).items() if k != "minillama"}
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config))
    random_weights(hf, seed=2)
    hf.set_attn_implementation(backend)
    model = from_hf(hf, max_seq_len=64)  # transformers has no fixed limit; give the dynamic case room
    model.attn_backend = backend
    assert (model.config.n_heads, model.config.n_kv_heads, model.config.rope_scaling, model.config.tie_embeddings) == (
        config.n_heads, config.n_kv_heads, config.rope_scaling, config.tie_embeddings)
    dense, padded = max_diffs(model, hf)
    assert dense <= TOLERANCE and padded <= TOLERANCE


ROUND_TRIPS = dict(CASES, **{"dynamic-unextended": dict(rope_scaling=dict(rope_type="dynamic", factor=2.0))})


@pytest.mark.parametrize("case", ["gqa-4to1", "rope-dynamic", "dynamic-unextended", "gqa-llama3-tied"])
def test_round_trip_keeps_config_and_weights(random_llama, case: str) -> None:
    model = random_llama(seed=3, **ROUND_TRIPS[case])
    back = from_hf(to_hf(model))
    assert back.config == model.config  # max_seq_len and the sizing rule survive the trip
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case", ["rope-linear", "rope-dynamic", "rope-llama3"])
def test_scaled_rope_cases_differ_from_default(random_llama, case: str) -> None:
    # The parity above would be vacuous if the scaling had no effect at this length.
    scaled, plain = random_llama(seed=1, **CASES[case]), random_llama(seed=1)
    dense, _, _ = batches()
    with torch.no_grad():
        assert (scaled(dense) - plain(dense)).abs().max() > 1e-3


def test_hf_config_errors_name_the_problem(tiny_config) -> None:
    good = to_hf_config_dict(tiny_config())
    with pytest.raises(ValueError, match="head_dim=32 != hidden_size / num_attention_heads = 16"):
        from_hf_config_dict(good | {"head_dim": 32})
    with pytest.raises(ValueError, match="silu"):
        from_hf_config_dict(good | {"hidden_act": "gelu"})
    with pytest.raises(ValueError, match=r"unknown fields \['n_experts'\]"):
        from_hf_config_dict(good | {"minillama": {"n_experts": 8}})
    with pytest.raises(ValueError, match="feed-forward width of 176, but intermediate_size is 200"):
        from_hf_config_dict(good | {"intermediate_size": 200})


@pytest.mark.parametrize("backend", BACKENDS)
def test_dynamic_rope_counts_positions_over_real_tokens(random_llama, backend: str) -> None:
    # Every row padded: the longest real sequence is 30 of 40 columns. Dynamic NTK scaling depends
    # on the largest position, so positions must count real tokens (as transformers' generate does),
    # not columns. A fresh transformers model: it keeps the frequencies of the longest input seen.
    model = random_llama(seed=4, **CASES["rope-dynamic"])
    model.attn_backend = backend
    hf = to_hf(model)
    hf.set_attn_implementation(backend)
    _, padded, mask = batches()
    mask[0, :10] = 0
    padded = padded * mask
    with torch.no_grad():
        ours = model(padded, attention_mask=mask)
        theirs = hf(padded, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    assert (ours - theirs)[mask.bool()].abs().max() <= TOLERANCE
