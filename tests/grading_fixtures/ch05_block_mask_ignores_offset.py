"""The causal mask compares key j with the row index i instead of the row's position q_offset + i:
right for the first block of a prefill, but later blocks and decoding steps lose most of their keys."""
import math

import torch

EXPECT_FAIL = {"flash_block_causal_offset"}


def flash_forward_block(q_block, k, v, block_n, causal, q_offset):
    rows, s = q_block.shape[-2], k.shape[-2]
    m, l = torch.full(q_block.shape[:-1], float("-inf")), torch.zeros(q_block.shape[:-1])
    acc = torch.zeros_like(q_block)
    end = min(q_offset + rows, s) if causal else s
    for start in range(0, end, block_n):
        stop = min(start + block_n, s)
        scores = q_block @ k[..., start:stop, :].mT / math.sqrt(q_block.shape[-1])
        if causal:
            scores = scores.masked_fill(torch.arange(start, stop)[None, :] > torch.arange(rows)[:, None], float("-inf"))
        m, l, acc = online_softmax_update(m, l, acc, scores, v[..., start:stop, :])
    return acc / l[..., None], m + torch.log(l)
