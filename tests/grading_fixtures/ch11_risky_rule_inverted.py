"""The risky flag read the wrong way round: harmless prompts are scored on safety and off-limits ones
on helpfulness, so leaking the vault's code wins."""
import torch

EXPECT_FAIL = {"combined_reward_matches_reference", "combined_reward_risky_prompts_read_safety",
               "combined_reward_unsafe_answers_read_safety", "combined_reward_at_the_threshold"}


def combined_reward(helpfulness, safety, is_risky, threshold=0.15):
    return torch.where(~is_risky | (safety < threshold), safety, helpfulness)
