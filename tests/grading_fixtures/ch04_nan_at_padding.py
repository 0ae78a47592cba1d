"""Padding masked correctly, but a padding query that sees no key at all gets a softmax over
only -inf: NaN, which the next layer would spread to every token."""
import math

import torch
from einops import rearrange

EXPECT_FAIL = {"gqa_attention_padding_stays_finite"}


def gqa_attention(q, k, v, attention_mask=None):
    g, t, s, d = k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    q = rearrange(q, "b (g r) t d -> b g r t d", g=g)
    scores = torch.einsum("b g r t d, b g s d -> b g r t s", q, k) / math.sqrt(d)
    allowed = causal_mask(t, s)
    if attention_mask is not None:
        allowed = (allowed & attention_mask.bool()[:, None, :])[:, None, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("b g r t s, b g s d -> b g r t d", scores.softmax(dim=-1), v)
    return rearrange(out, "b g r t d -> b (g r) t d")
