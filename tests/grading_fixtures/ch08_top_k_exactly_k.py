"""Exactly the k indices torch.topk returns are kept: of the tokens tied with the k-th largest value,
an arbitrary few survive."""
import torch

EXPECT_FAIL = {"top_k_keeps_ties"}


def top_k_filter(logits, k):
    k = min(k, logits.shape[-1])
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, torch.topk(logits, k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))
