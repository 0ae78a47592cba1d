"""The summed answer loss divided by every target, prompt ones included: a batch of long prompts looks
like an easy batch, and the learning rate is effectively scaled by the answer share."""
import torch.nn.functional as F

EXPECT_FAIL = {"masked_lm_loss_averages_over_answer_tokens"}


def masked_lm_loss(logits, labels):
    v = logits.shape[-1]
    targets = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(logits[:, :-1].reshape(-1, v).float(), targets, ignore_index=-100, reduction="sum")
    return total / targets.numel()
