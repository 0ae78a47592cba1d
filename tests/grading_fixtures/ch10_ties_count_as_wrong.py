"""Only a strictly higher chosen reward counts: a reward model that cannot tell two responses apart
scores 0 instead of 0.5."""
import torch

EXPECT_FAIL = {"pair_accuracy_by_level_counts_ties_as_half"}


def pair_accuracy_by_level(r_chosen, r_rejected, ratings):
    right = (r_chosen > r_rejected).float()
    out = {}
    for level in RATING_LEVELS:  # noqa: F821 - the notebook's
        rows = torch.tensor([r == level for r in ratings], dtype=torch.bool)
        if rows.any():
            out[level] = right[rows].mean().item()
    return out
