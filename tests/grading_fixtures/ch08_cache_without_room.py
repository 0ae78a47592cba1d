"""The cache is made for the prompt alone: decoding would overflow it at the first new token."""
import torch

EXPECT_FAIL = {"cache_has_room_for_the_answers"}


@torch.no_grad()
def prefill_and_expand(model, input_ids, k, max_new_tokens):
    b, t = input_ids.shape
    cache = model.new_cache(b, t)
    logits = model(input_ids, cache=cache)[:, -1]
    cache.repeat_rows(k)
    return logits.repeat_interleave(k, dim=0), cache
