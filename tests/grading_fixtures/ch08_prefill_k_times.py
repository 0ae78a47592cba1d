"""Right answers, at k times the price: every prompt is repeated k times before the forward."""
import torch

EXPECT_FAIL = {"the_prompts_go_through_the_model_once"}


@torch.no_grad()
def prefill_and_expand(model, input_ids, k, max_new_tokens):
    b, t = input_ids.shape
    cache = model.new_cache(b * k, t + max_new_tokens)
    logits = model(input_ids.repeat_interleave(k, dim=0), cache=cache)[:, -1]
    return logits, cache
