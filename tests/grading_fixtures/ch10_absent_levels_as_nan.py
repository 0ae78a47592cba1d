"""Every level gets an entry, NaN where it has no pairs: a table of accuracies that claims a level
was measured when it never occurred."""
import torch

EXPECT_FAIL = {"pair_accuracy_by_level_omits_absent_levels"}


def pair_accuracy_by_level(r_chosen, r_rejected, ratings):
    right = (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
    out = {}
    for level in RATING_LEVELS:  # noqa: F821 - the notebook's
        rows = torch.tensor([r == level for r in ratings], dtype=torch.bool)
        out[level] = right[rows].mean().item()
    return out
