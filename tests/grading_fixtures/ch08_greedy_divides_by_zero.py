"""No special case for temperature 0: logits / 0 are infinities, their softmax is NaN and sampling fails."""
import torch

EXPECT_FAIL = {"sample_token_greedy_at_temperature_zero"}


def sample_token(logits, temperature, top_k=None, generator=None):
    scaled = logits.float() / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)  # noqa: F821 - the notebook's
    return torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator).squeeze(-1)
