"""safety <= threshold: an answer exactly at the threshold is treated as unsafe."""
import torch

EXPECT_FAIL = {"combined_reward_at_the_threshold"}


def combined_reward(helpfulness, safety, is_risky, threshold=0.15):
    return torch.where(is_risky | (safety <= threshold), safety, helpfulness)
