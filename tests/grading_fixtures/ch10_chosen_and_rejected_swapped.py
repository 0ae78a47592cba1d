"""The rejected reward minus the chosen one: the model is trained to prefer the worse response."""
import torch.nn.functional as F

EXPECT_FAIL = {"ranking_loss_matches_reference", "ranking_loss_without_margin", "ranking_loss_stable_for_large_gaps"}


def ranking_loss(r_chosen, r_rejected, margin=0.0):
    return -F.logsigmoid(r_rejected - r_chosen - margin).mean()
