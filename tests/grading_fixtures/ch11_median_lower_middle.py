"""torch.median for the median: with an even number of samples it returns the lower middle value, so
the median curve sits too low."""
import torch

EXPECT_FAIL = {"reward_vs_k_median_curve"}


def reward_vs_k(scores, ks):
    kept = [k for k in ks if k <= scores.shape[1]]
    return {"k": kept,
            "max": [scores[:, :k].double().max(dim=1).values.mean().item() for k in kept],
            "median": [scores[:, :k].double().median(dim=1).values.mean().item() for k in kept]}
