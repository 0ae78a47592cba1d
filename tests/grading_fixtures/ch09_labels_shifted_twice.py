"""The loss shifts the labels by one, as it should, and then once more: position i is scored against
token i + 2."""
import torch.nn.functional as F

EXPECT_FAIL = {"masked_lm_loss_predicts_the_next_token", "masked_lm_loss_averages_over_answer_tokens"}


def masked_lm_loss(logits, labels):
    v = logits.shape[-1]
    targets = labels[:, 2:].reshape(-1)
    total = F.cross_entropy(logits[:, :-2].reshape(-1, v).float(), targets, ignore_index=-100, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)
