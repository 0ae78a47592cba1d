"""Key/value heads tiled (k.repeat) instead of grouped: query head j gets key head j % g instead
of j // r. Right for multi-head attention (g = h), wrong for every grouped case."""
import math

import torch

EXPECT_FAIL = {"gqa_attention_grouped_heads", "gqa_attention_padding_mask", "gqa_attention_padding_stays_finite",
               "gqa_attention_queries_are_last_positions"}


def gqa_attention(q, k, v, attention_mask=None):
    r, t, s, d = q.shape[1] // k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    k, v = k.repeat(1, r, 1, 1), v.repeat(1, r, 1, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    allowed = causal_mask(t, s)
    if attention_mask is not None:
        own_position = torch.arange(s)[None, :] == torch.arange(s - t, s)[:, None]
        allowed = ((allowed & attention_mask.bool()[:, None, :]) | own_position)[:, None]
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v
