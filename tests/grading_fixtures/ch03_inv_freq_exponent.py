"""theta ** (-i / d) instead of theta ** (-2i / d): the factor 2 of the pair index is missing."""
import torch

EXPECT_FAIL = {"rope_inv_freq_matches_reference"}


def rope_inv_freq(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(head_dim // 2, dtype=torch.float32) / head_dim)
