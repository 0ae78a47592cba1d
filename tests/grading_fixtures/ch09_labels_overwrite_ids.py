"""Writes -100 into the token ids themselves: the labels are right, but the model's input now holds
-100 wherever the prompt was."""
EXPECT_FAIL = {"sft_labels_leaves_ids_untouched"}


def sft_labels(ids, assistant_mask):
    ids[~assistant_mask] = -100
    return ids
