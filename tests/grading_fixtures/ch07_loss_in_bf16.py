"""The loss computed in the logits' own dtype: bf16 logits give a bf16 loss, rounded to 3 digits."""
import torch.nn.functional as F

EXPECT_FAIL = {"shifted_lm_loss_in_float32"}


def shifted_lm_loss(logits, labels, ignore_index=-100):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=ignore_index)
