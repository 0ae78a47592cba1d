"""RoPE: the two layouts agree, scores depend on distance only, scalings match transformers,
and Meta's interleaved checkpoints convert through the fixed permutation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from einops import rearrange, repeat
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from minillama.config import LlamaConfig
from minillama.hf import from_meta_state_dict, to_meta_state_dict
from minillama.model import Llama
from minillama.rope import (apply_rope, apply_rope_complex, default_inv_freq, interleaved_to_half_permutation,
                            inv_freq_for, permute_heads_for_half_split, rope_cos_sin)

SCALINGS = {
    "default": None,
    "linear": dict(rope_type="linear", factor=4.0),
    "dynamic": dict(rope_type="dynamic", factor=2.0, original_max_position_embeddings=16),
    "llama3": dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16),
}


def positions(b: int, t: int, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + t).expand(b, t)


def test_complex_form_equals_rotate_half_up_to_the_permutation() -> None:
    d = 16
    x = torch.randn(2, 9, 3, d, generator=torch.Generator().manual_seed(0))
    inv_freq = default_inv_freq(d, 10000.0)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [5, 17, 3, 40, 41, 42, 100, 0, 7]])
    cos, sin = rope_cos_sin(inv_freq, pos)
    perm = interleaved_to_half_permutation(d)
    assert perm.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15]
    meta = apply_rope_complex(x, inv_freq, pos)
    torch.testing.assert_close(meta[..., perm], apply_rope(x[..., perm], cos, sin), rtol=1e-5, atol=1e-5)
    # Without the permutation the two forms rotate different pairs.
    assert (meta - apply_rope(x, cos, sin)).abs().max() > 0.1


@pytest.mark.parametrize("rope", ["default", "linear", "llama3"])
def test_scores_depend_only_on_distance(tiny_config, rope: str) -> None:
    config = tiny_config(rope_scaling=SCALINGS[rope])
    d = config.head_dim
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, d, generator=gen), torch.randn(1, 1, 1, d, generator=gen)
    inv_freq = inv_freq_for(config, config.max_seq_len)

    def score(m: int, n: int) -> float:
        cos_m, sin_m = rope_cos_sin(inv_freq, torch.tensor([[m]]))
        cos_n, sin_n = rope_cos_sin(inv_freq, torch.tensor([[n]]))
        return float((apply_rope(q, cos_m, sin_m) * apply_rope(k, cos_n, sin_n)).sum())

    for m, n in [(3, 0), (10, 7), (0, 5), (20, 20)]:
        base = score(m, n)
        for shift in (1, 13, 50):
            assert score(m + shift, n + shift) == pytest.approx(base, abs=1e-4)
    assert abs(score(3, 0) - score(4, 0)) > 1e-3  # and the distance does matter
    cos, sin = rope_cos_sin(inv_freq, torch.tensor([[37]]))
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(), q.norm())  # a rotation


def hf_rope_config(rope: str, head_dim: int = 16, theta: float = 10000.0,
                   max_positions: int = 64) -> transformers.LlamaConfig:
    """transformers' own config for the same RoPE, written out by hand (not via minillama.hf)."""
    params = dict(SCALINGS[rope] or {"rope_type": "default"}, rope_theta=theta)
    if rope == "dynamic":  # transformers reads the original context from max_position_embeddings
        max_positions = params.pop("original_max_position_embeddings")
    return transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                                    max_position_embeddings=max_positions, rope_parameters=params)


@pytest.mark.parametrize("rope", ["linear", "dynamic", "llama3"])
@pytest.mark.parametrize("seq_len", [8, 16, 17, 40, 64])
def test_inv_freq_matches_transformers(tiny_config, rope: str, seq_len: int) -> None:
    ours = inv_freq_for(tiny_config(rope_scaling=SCALINGS[rope]), seq_len)
    # A tensor length, as transformers' rotary embedding passes at run time (max(position_ids) + 1);
    # a Python int would make it compute the dynamic base in float64, one ulp away.
    theirs, attention_factor = ROPE_INIT_FUNCTIONS[rope](hf_rope_config(rope), "cpu", seq_len=torch.tensor(seq_len))
    assert attention_factor == 1.0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_default_inv_freq_matches_transformers(tiny_config) -> None:
    theirs, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(hf_rope_config("default"))
    torch.testing.assert_close(inv_freq_for(tiny_config(), 64), theirs, rtol=0, atol=0)


def test_llama31_frequencies_match_transformers() -> None:
    # The released Llama 3.1 setting: head_dim 128, theta 5e5, 8192-token original context.
    scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)
    config = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072,
                                      rope_parameters=dict(scaling, rope_theta=500000.0))
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    ours = inv_freq_for(LlamaConfig(dim=4096, n_heads=32, rope_theta=500000.0, max_seq_len=131072,
                                    rope_scaling=scaling), 131072)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    base = default_inv_freq(128, 500000.0)
    assert torch.equal(ours[:20], base[:20])  # short wavelengths untouched
    torch.testing.assert_close(ours[-10:], base[-10:] / 8)  # long ones interpolated by the factor


@pytest.mark.parametrize("rope", list(SCALINGS))
def test_cos_sin_tables_match_transformers_rotary_embedding(tiny_config, rope: str) -> None:
    config = tiny_config(rope_scaling=SCALINGS[rope])
    pos = positions(2, 40)
    cos, sin = rope_cos_sin(inv_freq_for(config, 40), pos)
    hf_cos, hf_sin = LlamaRotaryEmbedding(hf_rope_config(rope))(torch.zeros(1), pos)
    torch.testing.assert_close(cos, hf_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, hf_sin, rtol=0, atol=1e-6)


def test_head_permutations_are_inverse() -> None:
    w = torch.randn(3 * 8, 5, generator=torch.Generator().manual_seed(2))
    half = permute_heads_for_half_split(w, n_heads=3)
    assert not torch.equal(half, w)
    assert torch.equal(permute_heads_for_half_split(half, n_heads=3, inverse=True), w)
    assert torch.equal(half[8:16], w[8:16][interleaved_to_half_permutation(8)])  # head by head


# --------------------------------------------------------------------------- Meta's layout
def meta_state_dict(config: LlamaConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random weights under Meta's names (any tensors of the right shapes are a valid checkpoint)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {name: p.shape for name, p in Llama(config).state_dict().items()}
    return {name: (1 + 0.1 * torch.randn(shape, generator=gen)) if name.endswith("norm.weight")
            else 0.08 * torch.randn(shape, generator=gen) for name, shape in shapes.items()}


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def meta_scores(sd: dict, config: LlamaConfig, ids: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Layer-0 attention scores ``(b, h, t, s)`` as Meta's llama code computes them: interleaved pairs
    rotated as complex numbers, K/V heads repeated for the query groups."""
    p = f"layers.{layer}."
    h = rms(F.embedding(ids, sd["tok_embeddings.weight"]), sd[p + "attention_norm.weight"], config.norm_eps)
    q = rearrange(h @ sd[p + "attention.wq.weight"].T, "b t (h d) -> b t h d", d=config.head_dim)
    k = rearrange(h @ sd[p + "attention.wk.weight"].T, "b t (g d) -> b t g d", d=config.head_dim)
    inv_freq, pos = inv_freq_for(config, ids.shape[1]), positions(*ids.shape)
    q, k = apply_rope_complex(q, inv_freq, pos), apply_rope_complex(k, inv_freq, pos)
    k = repeat(k, "b s g d -> b s (g r) d", r=config.n_rep)
    return torch.einsum("bthd, bshd -> bhts", q, k) / math.sqrt(config.head_dim)


def minillama_scores(model: Llama, ids: torch.Tensor) -> torch.Tensor:
    attn, d = model.layers[0].attention, model.config.head_dim
    h = model.layers[0].attention_norm(model.tok_embeddings(ids))
    cos, sin = rope_cos_sin(inv_freq_for(model.config, ids.shape[1]), positions(*ids.shape))
    q = apply_rope(rearrange(attn.wq(h), "b t (h d) -> b t h d", d=d), cos, sin)
    k = apply_rope(rearrange(attn.wk(h), "b t (g d) -> b t g d", d=d), cos, sin)
    k = repeat(k, "b s g d -> b s (g r) d", r=model.config.n_rep)
    return torch.einsum("bthd, bshd -> bhts", q, k) / math.sqrt(d)


def meta_logits(sd: dict, config: LlamaConfig, ids: torch.Tensor) -> torch.Tensor:
    """A whole forward pass in Meta's layout, written independently of minillama.model."""
    t = ids.shape[1]
    x = F.embedding(ids, sd["tok_embeddings.weight"])
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(config.n_layers):
        p = f"layers.{i}."
        h = rms(x, sd[p + "attention_norm.weight"], config.norm_eps)
        inv_freq, pos = inv_freq_for(config, t), positions(*ids.shape)
        q = apply_rope_complex(rearrange(h @ sd[p + "attention.wq.weight"].T, "b t (h d) -> b t h d",
                                         d=config.head_dim), inv_freq, pos)
        k = apply_rope_complex(rearrange(h @ sd[p + "attention.wk.weight"].T, "b t (g d) -> b t g d",
                                         d=config.head_dim), inv_freq, pos)
        v = rearrange(h @ sd[p + "attention.wv.weight"].T, "b t (g d) -> b t g d", d=config.head_dim)
        k, v = (repeat(z, "b s g d -> b s (g r) d", r=config.n_rep) for z in (k, v))
        scores = torch.einsum("bthd, bshd -> bhts", q, k) / math.sqrt(config.head_dim)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        out = rearrange(torch.einsum("bhts, bshd -> bthd", probs, v), "b t h d -> b t (h d)")
        x = x + out @ sd[p + "attention.wo.weight"].T
        h = rms(x, sd[p + "ffn_norm.weight"], config.norm_eps)
        gated = F.silu(h @ sd[p + "feed_forward.w1.weight"].T) * (h @ sd[p + "feed_forward.w3.weight"].T)
        x = x + gated @ sd[p + "feed_forward.w2.weight"].T
    return rms(x, sd["norm.weight"], config.norm_eps) @ sd["output.weight"].T


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_meta_checkpoint_gives_meta_attention_scores(tiny_config, kv_heads: int) -> None:
    config = tiny_config(n_kv_heads=kv_heads)
    sd = meta_state_dict(config, seed=3)
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(4))
    reference = meta_scores(sd, config, ids)
    with torch.no_grad():
        converted = minillama_scores(from_meta_state_dict(sd, config), ids)
        torch.testing.assert_close(converted, reference, rtol=0, atol=1e-5)
        # Loading Meta's rows as they are puts the rotation on the wrong pairs.
        naive = Llama(config)
        naive.load_state_dict(sd)
        assert (minillama_scores(naive, ids) - reference).abs().max() > 1e-2


@pytest.mark.parametrize("rope", ["default", "llama3"])
def test_meta_checkpoint_gives_meta_logits(tiny_config, rope: str) -> None:
    config = tiny_config(n_kv_heads=2, rope_scaling=SCALINGS[rope])
    sd = meta_state_dict(config, seed=5)
    ids = torch.randint(0, config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        diff = (from_meta_state_dict(sd, config)(ids) - meta_logits(sd, config, ids)).abs().max()
    assert diff <= 1e-5


def test_meta_state_dict_round_trips(tiny_config) -> None:
    config = tiny_config(n_heads=8, n_kv_heads=2)
    sd = meta_state_dict(config, seed=7)
    back = to_meta_state_dict(from_meta_state_dict(sd, config))
    assert set(back) == set(sd)
    for name in sd:
        assert torch.equal(back[name], sd[name]), name
    # Llama 2 checkpoints also carry Meta's precomputed frequency table; it is not a weight.
    with_freqs = dict(sd, **{"rope.freqs": default_inv_freq(config.head_dim, config.rope_theta)})
    assert torch.equal(from_meta_state_dict(with_freqs, config).layers[1].attention.wk.weight,
                       permute_heads_for_half_split(sd["layers.1.attention.wk.weight"], 2))
