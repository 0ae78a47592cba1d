"""Greedy decoding on the cache that stops one token early."""
import torch

EXPECT_FAIL = {"greedy_decode_matches_generate"}


@torch.no_grad()
def greedy_decode(model, input_ids, max_new_tokens):
    cache = model.new_cache(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
    ids, step_input = input_ids, input_ids
    for _ in range(max_new_tokens - 1):
        next_token = model(step_input, cache=cache)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat((ids, next_token), dim=1)
        step_input = next_token
    return ids
