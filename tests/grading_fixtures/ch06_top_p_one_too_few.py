"""Top-p keeping the tokens whose cumulative probability, their own included, stays within p: the
token that crosses p is dropped, one too few (the top token is still forced in)."""
import torch

EXPECT_FAIL = {"top_p_matches_reference", "top_p_nucleus_boundary"}


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    drop_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) > p
    drop_sorted[..., 0] = False
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
