"""The logsumexp returned as log(l), forgetting that l was summed relative to the row max m."""
import math

import torch

EXPECT_FAIL = {"flash_block_logsumexp"}


def flash_forward_block(q_block, k, v, block_n, causal, q_offset):
    rows, s = q_block.shape[-2], k.shape[-2]
    m, l = torch.full(q_block.shape[:-1], float("-inf")), torch.zeros(q_block.shape[:-1])
    acc = torch.zeros_like(q_block)
    end = min(q_offset + rows, s) if causal else s
    query_pos = q_offset + torch.arange(rows)
    for start in range(0, end, block_n):
        stop = min(start + block_n, s)
        scores = q_block @ k[..., start:stop, :].mT / math.sqrt(q_block.shape[-1])
        if causal:
            scores = scores.masked_fill(torch.arange(start, stop)[None, :] > query_pos[:, None], float("-inf"))
        m, l, acc = online_softmax_update(m, l, acc, scores, v[..., start:stop, :])
    return acc / l[..., None], torch.log(l)
