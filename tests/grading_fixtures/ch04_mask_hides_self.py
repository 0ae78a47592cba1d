"""A strictly lower-triangular mask: each query is hidden from its own key."""
import torch

EXPECT_FAIL = {"causal_mask_square", "causal_mask_for_decoding"}


def causal_mask(t: int, s: int) -> torch.Tensor:
    return torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t - 1)
