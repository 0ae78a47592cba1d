"""log(sigmoid(x)) written out: inf once a pair's implicit reward margin passes about -104."""
import torch

EXPECT_FAIL = {"dpo_loss_stable_for_large_margins"}


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -torch.log(torch.sigmoid(margin)).mean()
