"""The mask aligned to the top-left corner: right when t == s, but a new query during decoding
(t < s) is kept from most of the cached keys."""
import torch

EXPECT_FAIL = {"causal_mask_for_decoding"}


def causal_mask(t: int, s: int) -> torch.Tensor:
    return torch.ones(t, s, dtype=torch.bool).tril()
