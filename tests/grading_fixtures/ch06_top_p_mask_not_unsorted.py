"""The nucleus decided in sorted order and applied in vocabulary order without undoing the sort."""
import torch

EXPECT_FAIL = {"top_p_matches_reference", "top_p_keeps_the_top_token", "top_p_nucleus_boundary"}


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    drop = (probs.cumsum(dim=-1) - probs) >= p
    return logits.masked_fill(drop, float("-inf"))
