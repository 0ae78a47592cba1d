"""Safety decides where it is ABOVE the threshold: every safe answer to a harmless prompt is scored on
safety, and an unsafe one on its helpfulness."""
import torch

EXPECT_FAIL = {"combined_reward_matches_reference", "combined_reward_unsafe_answers_read_safety"}


def combined_reward(helpfulness, safety, is_risky, threshold=0.15):
    return torch.where(is_risky | (safety > threshold), safety, helpfulness)
