"""The temperature divides the probabilities instead of the logits: sampling renormalises them, so the
temperature has no effect at all."""
import torch

EXPECT_FAIL = {"sample_token_follows_the_temperature"}


def sample_token(logits, temperature, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)  # noqa: F821 - the notebook's
    probs = logits.float().softmax(dim=-1) / temperature
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
