"""The implicit rewards without beta: the policy is pushed as if beta were 1, ten times harder than
asked, and may drift far from the reference."""
import torch.nn.functional as F

EXPECT_FAIL = {"dpo_loss_matches_reference", "dpo_loss_stable_for_large_margins"}


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    return -F.logsigmoid((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)).mean()
