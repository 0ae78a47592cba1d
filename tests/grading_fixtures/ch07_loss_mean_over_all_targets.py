"""Ignored targets zeroed but still counted in the mean: the more padding a batch has, the smaller
its loss looks."""
import torch.nn.functional as F

EXPECT_FAIL = {"shifted_lm_loss_ignores_targets"}


def shifted_lm_loss(logits, labels, ignore_index=-100):
    v = logits.shape[-1]
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, v).float(), labels[:, 1:].reshape(-1),
                                ignore_index=ignore_index, reduction="none")
    return per_token.sum() / per_token.numel()
