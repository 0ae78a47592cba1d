"""The mask read the wrong way round: the model is trained to write the prompt and never the answer."""
import torch

EXPECT_FAIL = {"sft_labels_matches_reference"}


def sft_labels(ids, assistant_mask):
    return torch.where(assistant_mask, torch.full_like(ids, -100), ids)
