"""The running output sum is not rescaled when a block raises the row's max: acc keeps terms
weighted relative to the old max next to terms relative to the new one (l is rescaled)."""
import torch

EXPECT_FAIL = {"online_softmax_rescales_the_state", "online_softmax_folds_to_softmax"}


def online_softmax_update(m, l, acc, scores_block, v_block):
    m_new = torch.maximum(m, scores_block.amax(dim=-1))
    shift = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
    alpha = torch.exp(m - shift)
    p = torch.exp(scores_block - shift[..., None])
    return m_new, alpha * l + p.sum(dim=-1), acc + p @ v_block
