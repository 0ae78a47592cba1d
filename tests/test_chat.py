"""Chats: one encoder with one over-length policy; batched sampling through ``generate`` (greedy
batches equal one-at-a-time decoding, rows stop at ``<|end|>``, samples are seeded per response,
not per batch); the inverse-CDF sampler draws from the right distribution; response
log-probabilities equal a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import chat_lm
from minillama.chat import (chat_batch, chat_example, encode_chat, response_logprobs, response_text,
                            sample_responses)
from minillama.generate import generate, inverse_cdf_sample
from minillama.sequences import IGNORE_INDEX, sequence_logprobs

KINDS = ["arithmetic", "fact_qa", "sort", "repeat", "one_word"]


@pytest.fixture
def tiny_model(tokenizer):
    """``tiny_model(seed=0)``: a two-layer random chat model with context for long prompts."""
    return lambda seed=0: chat_lm(tokenizer, seed, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=384, init_std=0.1)


def chat_prompt_ids(tokenizer, prompt, system=None):
    return encode_chat(tokenizer, prompt, system=system)[0]


@pytest.fixture(scope="module")
def prompts(world) -> list[str]:
    return [t.prompt for t in world.chat_tasks("val", 12, kinds=KINDS)]


def test_one_chat_encoder_with_one_over_length_policy(tokenizer) -> None:
    ids, mask = encode_chat(tokenizer, "Say hi.", "Hi.")
    assert (ids, mask) == tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."},
                                                         {"role": "assistant", "content": "Hi."}])
    example_ids, labels = chat_example(tokenizer, "Say hi.", "Hi.")
    assert example_ids == ids and labels == [i if m else IGNORE_INDEX for i, m in zip(ids, mask)]
    with pytest.raises(ValueError, match=rf"a chat of {len(ids)} tokens is longer than the limit of 5 tokens"):
        encode_chat(tokenizer, "Say hi.", "Hi.", max_len=5)
    with pytest.raises(ValueError, match="longer than the limit"):
        chat_batch(tokenizer, ["Say hi."], ["Hi."], max_len=5)
    batch = chat_batch(tokenizer, ["Say hi.", "What is 2 plus 3?"], ["Hi.", "5"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["response_mask"].shape
    assert batch["response_mask"].dtype == torch.bool and batch["attention_mask"][0].sum() == len(ids)


def test_chat_prompt_ids_end_with_the_assistant_marker(tokenizer) -> None:
    ids = chat_prompt_ids(tokenizer, "What is 2 plus 3?")
    assert ids == tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], True)[0]
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.role_id("assistant")
    with_system = chat_prompt_ids(tokenizer, "What is 2 plus 3?", system="Be brief.")
    assert with_system[1] == tokenizer.role_id("system") and with_system[-len(ids) + 1:] == ids[1:]


def test_greedy_batches_equal_one_at_a_time_and_core_generate(tiny_model, tokenizer, prompts) -> None:
    model = tiny_model(seed=1)
    lengths = {len(chat_prompt_ids(tokenizer, p)) for p in prompts}
    assert len(lengths) > 3  # the batch really is left-padded
    batched = sample_responses(model, tokenizer, prompts, max_new_tokens=24, batch_size=64)
    assert batched == sample_responses(model, tokenizer, prompts, max_new_tokens=24, batch_size=1)
    assert batched == sample_responses(model, tokenizer, prompts, max_new_tokens=24, batch_size=5)
    stops = (tokenizer.end_id, tokenizer.eos_id)
    for prompt, (response,) in zip(prompts, batched):
        ids = torch.tensor([chat_prompt_ids(tokenizer, prompt)])
        alone = generate(model, ids, 24)[0, ids.shape[1]:].tolist()
        assert response == response_text(tokenizer, alone, stops)
    assert len({r[0] for r in batched}) > len(prompts) // 2  # answers differ between prompts


def _relabel(model, a: int, b: int) -> None:
    """Swap tokens ``a`` and ``b`` in the embedding and the output head: the same model under new names."""
    with torch.no_grad():
        for weight in (model.tok_embeddings.weight, model.output.weight):
            weight[[a, b]] = weight[[b, a]]


def test_rows_stop_at_the_end_token(tiny_model, tokenizer, prompts) -> None:
    """A model whose <|end|> is another model's token X stops exactly where that one writes X."""
    old = tiny_model(seed=2)
    n = 24
    firsts = [generate(old, torch.tensor([chat_prompt_ids(tokenizer, p)]), n)[0, -n:].tolist() for p in prompts]
    # X: a token the old model writes in the middle of several answers, but not in all of them.
    counts = np.bincount([tok for seq in firsts for tok in set(seq[2:])], minlength=tokenizer.vocab_size)
    counts[list(tokenizer.special_ids)] = 0
    counts[counts >= len(prompts)] = 0
    x = int(counts.argmax())
    assert counts[x] >= 2
    end = tokenizer.end_id
    new = tiny_model(seed=2)
    _relabel(new, end, x)

    def swap(ids: list[int]) -> list[int]:
        return [x if i == end else end if i == x else i for i in ids]

    responses = sample_responses(new, tokenizer, prompts, max_new_tokens=n, batch_size=64)
    stops = (end, tokenizer.eos_id)
    stopped = 0
    for prompt, (response,) in zip(prompts, responses):
        ids = torch.tensor([swap(chat_prompt_ids(tokenizer, prompt))])
        tokens = swap(generate(old, ids, n)[0, -n:].tolist())  # what `new` writes, without stopping
        assert response == response_text(tokenizer, tokens, stops)
        stopped += any(t in stops for t in tokens)
    assert 2 <= stopped  # rows stopped at different steps, the rest ran to max_new_tokens


def test_samples_are_seeded_per_response(tiny_model, tokenizer, prompts) -> None:
    model = tiny_model(seed=3)
    kwargs = dict(n_samples=3, temperature=1.0, top_k=50, max_new_tokens=12, seed=7)
    first = sample_responses(model, tokenizer, prompts, batch_size=64, **kwargs)
    assert first == sample_responses(model, tokenizer, prompts, batch_size=64, **kwargs)
    assert first == sample_responses(model, tokenizer, prompts, batch_size=4, **kwargs)  # other batches
    assert first[:3] == sample_responses(model, tokenizer, prompts[:3], batch_size=64, **kwargs)
    assert [len(s) for s in first] == [3] * len(prompts)
    assert all(len(set(s)) > 1 for s in first)  # the samples of one prompt differ
    other = sample_responses(model, tokenizer, prompts, batch_size=64, **{**kwargs, "seed": 8})
    assert sum(a != b for a, b in zip(first, other)) > len(prompts) // 2


def test_greedy_repeats_one_answer(tiny_model, tokenizer, prompts) -> None:
    model = tiny_model(seed=4)
    stats: dict = {}
    three = sample_responses(model, tokenizer, prompts, n_samples=3, max_new_tokens=8, stats=stats)
    one = sample_responses(model, tokenizer, prompts, max_new_tokens=8)
    assert three == [s * 3 for s in one]
    assert stats["responses"] == len(prompts)  # computed once per prompt, not three times
    assert 0 < stats["new_tokens"] <= 8 * len(prompts) and stats["tokens_per_s"] > 0


def test_arguments_are_checked(tiny_model, tokenizer) -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="max_seq_len=384"):
        sample_responses(model, tokenizer, ["word " * 300], max_new_tokens=8)
    with pytest.raises(ValueError, match="temperature"):
        sample_responses(model, tokenizer, ["hi"], temperature=-1.0)
    with pytest.raises(ValueError, match="n_samples"):
        sample_responses(model, tokenizer, ["hi"], n_samples=0)
    with pytest.raises(TypeError, match="prompts"):
        sample_responses(model, tokenizer, "hi")
    assert sample_responses(model, tokenizer, []) == []


def test_inverse_cdf_sampler_draws_from_the_filtered_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 12, generator=gen) * 2
    u = torch.rand(20_000, generator=gen, dtype=torch.float64)
    tokens = inverse_cdf_sample(logits.expand(len(u), -1), u, temperature=0.7)
    freq = torch.bincount(tokens, minlength=12).double() / len(u)
    torch.testing.assert_close(freq, (logits[0] / 0.7).softmax(-1).double(), atol=0.015, rtol=0)
    top3 = set(logits[0].topk(3).indices.tolist())
    kept = inverse_cdf_sample(logits.expand(len(u), -1), u, temperature=1.0, top_k=3)
    assert set(kept.tolist()) == top3
    # A uniform picks the same token whatever the other rows of the batch are.
    mixed = torch.cat((logits, torch.randn(5, 12, generator=gen)))
    u6 = torch.rand(6, generator=gen, dtype=torch.float64)
    assert inverse_cdf_sample(mixed, u6)[0] == inverse_cdf_sample(logits, u6[:1])[0]
    assert inverse_cdf_sample(logits, torch.zeros(1, dtype=torch.float64)) == logits[0].softmax(-1).nonzero()[0]


def test_response_logprobs_equal_a_direct_computation(tiny_model, tokenizer, world) -> None:
    model = tiny_model(seed=5)
    tasks = world.chat_tasks("val", 5, kinds=KINDS)
    prompts, responses = [t.prompt for t in tasks], [t.reference for t in tasks]
    responses[1] = "A quite different and much longer answer than the others."
    got = response_logprobs(model, tokenizer, prompts, responses, batch_size=2)  # padded batches
    for k, (p, r) in enumerate(zip(prompts, responses)):
        ids, mask = tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}])
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0].log_softmax(-1)
        want = sum(float(logp[i - 1, ids[i]]) for i in range(1, len(ids)) if mask[i])
        assert abs(float(got[k]) - want) < 1e-3
        assert sum(mask) == len(tokenizer.encode(r)) + 1  # the answer and its <|end|>
    assert got.shape == (5,) and bool((got < 0).all())


def test_sequence_logprobs_is_differentiable(tiny_model, tokenizer) -> None:
    model = tiny_model(seed=6).train()
    batch = chat_batch(tokenizer, ["What is 2 plus 2?", "Say hi."], ["4", "Hi there."])
    logp = sequence_logprobs(model, **batch)
    logp.sum().backward()
    assert logp.shape == (2,)
    assert model.output.weight.grad is not None and model.output.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="response_mask"):
        sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"][:, 1:])
