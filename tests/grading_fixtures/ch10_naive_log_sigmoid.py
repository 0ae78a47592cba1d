"""log(sigmoid(x)) written out: sigmoid underflows to 0 for a reward gap of about -104 and the loss
becomes inf (and its gradient NaN)."""
import torch

EXPECT_FAIL = {"ranking_loss_stable_for_large_gaps"}


def ranking_loss(r_chosen, r_rejected, margin=0.0):
    return -torch.log(torch.sigmoid(r_chosen - r_rejected - margin)).mean()
