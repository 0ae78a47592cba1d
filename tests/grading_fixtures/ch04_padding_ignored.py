"""attention_mask accepted and never applied: real tokens attend to the padding."""
import math

import torch
from einops import rearrange

EXPECT_FAIL = {"gqa_attention_padding_mask", "gqa_attention_padding_stays_finite"}


def gqa_attention(q, k, v, attention_mask=None):
    g, t, s, d = k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    q = rearrange(q, "b (g r) t d -> b g r t d", g=g)
    scores = torch.einsum("b g r t d, b g s d -> b g r t s", q, k) / math.sqrt(d)
    scores = scores.masked_fill(~causal_mask(t, s), float("-inf"))
    out = torch.einsum("b g r t s, b g s d -> b g r t d", scores.softmax(dim=-1), v)
    return rearrange(out, "b g r t d -> b (g r) t d")
