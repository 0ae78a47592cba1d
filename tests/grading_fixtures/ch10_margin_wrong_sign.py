"""The margin added instead of subtracted: a clear preference now needs a smaller reward gap than a
close call, the opposite of what the margin is for."""
import torch.nn.functional as F

EXPECT_FAIL = {"ranking_loss_matches_reference"}


def ranking_loss(r_chosen, r_rejected, margin=0.0):
    return -F.logsigmoid(r_chosen - r_rejected + margin).mean()
