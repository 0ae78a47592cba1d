"""No guard for rows that have seen only -inf: exp(-inf - (-inf)) is NaN, and the NaN stays in l
and acc for the rest of the row, even once visible keys arrive."""
import torch

EXPECT_FAIL = {"online_softmax_masked_rows"}


def online_softmax_update(m, l, acc, scores_block, v_block):
    m_new = torch.maximum(m, scores_block.amax(dim=-1))
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores_block - m_new[..., None])
    return m_new, alpha * l + p.sum(dim=-1), alpha[..., None] * acc + p @ v_block
