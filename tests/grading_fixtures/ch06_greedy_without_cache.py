"""Greedy decoding that reruns the model on the whole sequence at every step: right tokens, at the
cost of t + n positions per step instead of one."""
import torch

EXPECT_FAIL = {"greedy_decode_uses_the_kv_cache"}


@torch.no_grad()
def greedy_decode(model, input_ids, max_new_tokens):
    ids = input_ids
    for _ in range(max_new_tokens):
        next_token = model(ids)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat((ids, next_token), dim=1)
    return ids
