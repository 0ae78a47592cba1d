"""Draws from torch's global random state instead of the generator given: right distribution, but a
run cannot be repeated from its seed."""
import torch

EXPECT_FAIL = {"sample_token_repeats_with_the_same_seed"}


def sample_token(logits, temperature, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)  # noqa: F821 - the notebook's
    return torch.multinomial(scaled.softmax(dim=-1), 1).squeeze(-1)
