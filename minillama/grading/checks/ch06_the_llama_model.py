"""Chapter 06 checks: ``count_parameters``, ``top_p_filter`` and ``greedy_decode``.

Shapes: ``logits (b, v)``; ``input_ids (b, t)`` -> ``(b, t + n)`` for ``n`` new tokens.
"""

from __future__ import annotations

import torch

from ...config import LlamaConfig
from ...generate import filter_logits, generate
from ...model import Llama
from ..check import Checks, Learner, expect_equal, expect_tensor, fail, seeded

CHECKS = Checks()

# A model small enough to build and run in milliseconds, with grouped-query attention.
SMALL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=61, multiple_of=16, max_seq_len=32)


def small_model(seed: int) -> Llama:
    model = Llama(LlamaConfig(**SMALL), seed=seed)
    with torch.no_grad():  # larger weights than the init, so that greedy choices differ between steps
        for p in model.parameters():
            p.mul_(4.0)
    return model.eval()


# ------------------------------------------------------------------ count_parameters
@CHECKS.add(points=1, hint="per layer: wq, wk, wv, wo, w1, w2, w3 and two RMSNorm weights; plus the embedding, "
                           "the final norm and the output head")
def count_parameters_llama2_7b(learner: Learner) -> None:
    count_parameters = learner.function("count_parameters")
    config = LlamaConfig.from_preset("llama2-7b")
    expect_equal(count_parameters(config), config.num_parameters(), "count_parameters(llama2-7b)")


@CHECKS.add(points=1, hint="with grouped-query attention wk and wv are (n_kv_heads * head_dim, dim), and the "
                           "SwiGLU width is config.ffn_hidden_dim")
def count_parameters_grouped_query(learner: Learner) -> None:
    count_parameters = learner.function("count_parameters")
    for preset in ("llama2-70b", "llama3-8b"):
        config = LlamaConfig.from_preset(preset)
        expect_equal(count_parameters(config), config.num_parameters(), f"count_parameters({preset})")


@CHECKS.add(points=1, hint="with tie_embeddings the output head IS the embedding matrix: count it once")
def count_parameters_tied_embeddings(learner: Learner) -> None:
    count_parameters = learner.function("count_parameters")
    config = LlamaConfig(**{**SMALL, "n_kv_heads": None}, tie_embeddings=True)
    expected = sum(p.numel() for p in Llama(config, seed=0).parameters())  # parameters() lists a tied one once
    expect_equal(count_parameters(config), expected, "count_parameters(a model with tied embeddings)")


# ------------------------------------------------------------------ top_p_filter
@CHECKS.add(points=2, hint="sort by probability, keep the smallest prefix whose probability reaches p, put the "
                           "mask back in vocabulary order, and set the others to -inf (kept logits unchanged)")
def top_p_matches_reference(learner: Learner) -> None:
    top_p_filter = learner.function("top_p_filter")
    logits = torch.randn(4, 50, generator=seeded(0)) * 2
    for p in (0.3, 0.8, 0.95):
        expect_tensor(top_p_filter(logits.clone(), p), filter_logits(logits, top_p=p), f"top_p_filter(logits, {p})",
                      atol=0, rtol=0)


@CHECKS.add(points=1, hint="however small p is, the most likely token is always kept")
def top_p_keeps_the_top_token(learner: Learner) -> None:
    top_p_filter = learner.function("top_p_filter")
    logits = torch.randn(3, 20, generator=seeded(1))
    kept = torch.isfinite(top_p_filter(logits.clone(), 1e-4))
    expected = torch.zeros_like(kept).scatter(-1, logits.argmax(-1, keepdim=True), True)
    if not torch.equal(kept, expected):
        fail(f"with p=1e-4 it kept {kept.sum(-1).tolist()} tokens per row, expected exactly the argmax")


@CHECKS.add(points=2, hint="keep a token when the probability of the tokens ranked above it is still below p: "
                           "the token that crosses p belongs to the nucleus")
def top_p_nucleus_boundary(learner: Learner) -> None:
    top_p_filter = learner.function("top_p_filter")
    # Distinct powers-of-two-ish probabilities in shuffled order; sorted cumsum 0.5, 0.75, 0.875, 0.9375, 0.984, 1.
    probs = torch.tensor([0.0625, 0.25, 0.046875, 0.5, 0.125, 0.015625])
    logits = probs.log()[None]
    for p, n_kept in ((0.4, 1), (0.6, 2), (0.8, 3), (0.9, 4), (0.95, 5), (1.0, 6)):
        kept = torch.isfinite(top_p_filter(logits.clone(), p))[0]
        top = probs.argsort(descending=True)[:n_kept]
        expected = torch.zeros_like(kept).scatter(0, top, True)
        if not torch.equal(kept, expected):
            fail(f"with p={p} it kept tokens {kept.nonzero().flatten().tolist()}, expected the nucleus "
                 f"{sorted(top.tolist())} (probabilities {probs.tolist()})")


# ------------------------------------------------------------------ greedy_decode
@CHECKS.add(points=2, hint="at each step append the argmax of the last position's logits, max_new_tokens times")
def greedy_decode_matches_generate(learner: Learner) -> None:
    greedy_decode = learner.function("greedy_decode")
    model = small_model(seed=0)
    input_ids = torch.randint(0, SMALL["vocab_size"], (2, 5), generator=seeded(2))
    expected = generate(model, input_ids, max_new_tokens=6, temperature=0.0)
    expect_tensor(greedy_decode(model, input_ids.clone(), 6), expected, "greedy_decode(model, input_ids, 6)",
                  atol=0, rtol=0)


@CHECKS.add(points=1, hint="make one cache with model.new_cache(b, t + max_new_tokens), feed the prompt once, "
                           "then only the newest token with cache=cache")
def greedy_decode_uses_the_kv_cache(learner: Learner) -> None:
    greedy_decode = learner.function("greedy_decode")
    model = small_model(seed=1)
    calls: list[tuple[int, bool]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        cache = args[3] if len(args) > 3 else kwargs.get("cache")
        calls.append((int(ids.shape[1]), cache is not None))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        greedy_decode(model, torch.randint(0, SMALL["vocab_size"], (1, 4), generator=seeded(3)), 5)
    finally:
        handle.remove()
    if not calls:
        fail("greedy_decode never called model(...)")
    lengths = [n for n, _ in calls]
    if not all(with_cache for _, with_cache in calls) or any(n != 1 for n in lengths[1:]) or len(calls) > 6:
        fail(f"model was called with {lengths} tokens (cache passed: {[c for _, c in calls]}); with the cache "
             f"it sees the prompt once, then 1 token per step")

