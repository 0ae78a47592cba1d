"""Attention scores q k^T without the 1/sqrt(d) scale: the softmax comes out far too peaked."""
import torch
from einops import rearrange

EXPECT_FAIL = {"gqa_attention_multi_head", "gqa_attention_grouped_heads", "gqa_attention_padding_mask",
               "gqa_attention_padding_stays_finite", "gqa_attention_queries_are_last_positions"}


def gqa_attention(q, k, v, attention_mask=None):
    g, t, s = k.shape[1], q.shape[2], k.shape[2]
    q = rearrange(q, "b (g r) t d -> b g r t d", g=g)
    scores = torch.einsum("b g r t d, b g s d -> b g r t s", q, k)
    allowed = causal_mask(t, s)
    if attention_mask is not None:
        own_position = torch.arange(s)[None, :] == torch.arange(s - t, s)[:, None]
        allowed = ((allowed & attention_mask.bool()[:, None, :]) | own_position)[:, None, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("b g r t s, b g s d -> b g r t d", scores.softmax(dim=-1), v)
    return rearrange(out, "b g r t d -> b (g r) t d")
