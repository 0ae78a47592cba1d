"""The cache and logits are copied with repeat, not repeat_interleave: the rows of different prompts
alternate (row 1 continues prompt 1, not prompt 0)."""
import torch

EXPECT_FAIL = {"prefill_logits_are_each_prompts_last_logits_k_times", "cache_holds_each_prompt_k_times"}


@torch.no_grad()
def prefill_and_expand(model, input_ids, k, max_new_tokens):
    b, t = input_ids.shape
    cache = model.new_cache(b, t + max_new_tokens)
    logits = model(input_ids, cache=cache)[:, -1]
    cache.k = [x.repeat(k, 1, 1, 1) for x in cache.k]
    cache.v = [x.repeat(k, 1, 1, 1) for x in cache.v]
    return logits.repeat(k, 1), cache
