"""Chapter 08 checks: ``top_k_filter``, ``sample_token`` and ``prefill_and_expand``.

Shapes: ``logits (b, v)``; ``sample_token`` returns ``(b,)`` int64 token ids. References:
:func:`minillama.generate.filter_logits` (``top_k``) and the distribution
:func:`minillama.generate.sample_next` draws from, ``softmax(filter(logits / temperature))``.

A learner may sample in any correct way (``torch.multinomial``, Gumbel-max, inverse CDF), so the
sampling checks compare frequencies over many seeded draws with the exact probabilities: within six
standard deviations plus twelve draws (the slack keeps rare tokens, whose counts are Poisson rather
than normal, from failing by chance), and exactly zero for a token of probability zero. A correct
sampler fails them with a probability of order 1e-7; the mistakes they are about move some
frequency by dozens of standard deviations. ``sample_token`` is
checked with the reference ``top_k_filter`` swapped in.

``prefill_and_expand(model, input_ids (b, t), k, max_new_tokens) -> (logits (b k, v), cache)`` is
compared with :meth:`~minillama.model.Llama.new_cache`, one forward and
:meth:`~minillama.attention.KVCache.repeat_rows`, exactly; a hook on the embedding counts the
positions the model processes.
"""

from __future__ import annotations

from typing import Any

import torch

from ...attention import KVCache
from ...config import LlamaConfig
from ...generate import filter_logits
from ...model import Llama
from ..check import Checks, Learner, expect_equal, expect_pair, expect_tensor, expect_tensor_like, fail, seeded

CHECKS = Checks()

DRAWS = 40_000  # rows of the same logits: one call gives DRAWS independent samples
ROW = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])  # probabilities 0.57 .. 0.004 at temperature 1


def reference_top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    return filter_logits(logits, top_k=k)


def _top_k(learner: Learner, logits: torch.Tensor, k: int) -> Any:
    top_k_filter = learner.function("top_k_filter")
    return top_k_filter(logits.clone(), k)


# ------------------------------------------------------------------ top_k_filter
@CHECKS.add(points=2, hint="find the k-th largest logit of each row (torch.topk(...).values[..., -1:]) and set "
                           "every logit below it to -inf; the kept logits stay exactly as they were")
def top_k_matches_reference(learner: Learner) -> None:
    logits = torch.randn(4, 50, generator=seeded(0)) * 2
    for k in (1, 5, 20):
        expect_tensor(_top_k(learner, logits, k), reference_top_k_filter(logits, k), f"top_k_filter(logits, {k})",
                      atol=0, rtol=0)


@CHECKS.add(points=1, hint="compare with the k-th largest value (logits < kth), so that tokens tied with it are "
                           "all kept rather than an arbitrary k of them")
def top_k_keeps_ties(learner: Learner) -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    for k in (2, 3):
        expect_tensor(_top_k(learner, logits, k), reference_top_k_filter(logits, k),
                      f"top_k_filter({logits.tolist()}, {k})", atol=0, rtol=0)


@CHECKS.add(points=1, hint="k may be larger than the vocabulary: use min(k, v), and keep every token")
def top_k_larger_than_vocabulary(learner: Learner) -> None:
    logits = torch.randn(2, 7, generator=seeded(1))
    for k in (7, 10):
        expect_tensor(_top_k(learner, logits, k), logits, f"top_k_filter(logits of 7 tokens, {k})", atol=0, rtol=0)


# ------------------------------------------------------------------ sample_token
def _sample(learner: Learner, logits: torch.Tensor, temperature: float, top_k: int | None = None,
            seed: int = 0) -> Any:
    sample_token = learner.function("sample_token")
    with learner.using_references(top_k_filter=reference_top_k_filter):
        return sample_token(logits.clone(), temperature, top_k, seeded(seed))


def _expect_ids(got: Any, b: int, what: str) -> torch.Tensor:
    expect_tensor_like(got, torch.zeros(b, dtype=torch.long), what)
    return got


def _expect_frequencies(got: Any, probs: torch.Tensor, what: str) -> None:
    """``got (n,)`` ids drawn from ``probs (v,)``: every frequency close to its probability."""
    ids = _expect_ids(got, DRAWS, what)
    v = probs.shape[0]
    if ids.min() < 0 or ids.max() >= v:
        fail(f"{what} drew ids outside [0, {v})")
    freq = torch.bincount(ids, minlength=v).double() / DRAWS
    probs = probs.double()
    tolerance = 6 * (probs * (1 - probs) / DRAWS).sqrt() + 12 / DRAWS
    tolerance[probs == 0] = 0.0  # a filtered-out token must never be drawn
    if ((freq - probs).abs() > tolerance).any():
        fail(f"{what}: frequencies {[round(x, 3) for x in freq.tolist()]} over {DRAWS} draws, expected "
             f"probabilities {[round(x, 3) for x in probs.tolist()]}")


@CHECKS.add(points=1, hint="temperature 0 means greedy: return logits.argmax(-1) (no division by zero)")
def sample_token_greedy_at_temperature_zero(learner: Learner) -> None:
    logits = torch.randn(5, 30, generator=seeded(2))
    expect_tensor(_sample(learner, logits, 0.0), logits.argmax(-1), "sample_token(logits, 0.0)", atol=0, rtol=0)


@CHECKS.add(points=2, hint="divide the logits by the temperature BEFORE the softmax, then draw from those "
                           "probabilities: T < 1 sharpens the distribution, T > 1 flattens it")
def sample_token_follows_the_temperature(learner: Learner) -> None:
    logits = ROW.expand(DRAWS, -1)
    for index, temperature in enumerate((1.0, 0.5, 2.0)):
        expected = (ROW / temperature).softmax(-1)
        _expect_frequencies(_sample(learner, logits, temperature, seed=10 + index), expected,
                            f"sample_token(logits, temperature={temperature})")


@CHECKS.add(points=1, hint="with top_k, filter the (temperature-scaled) logits with top_k_filter before the "
                           "softmax: the other tokens are never drawn, the kept ones keep their odds")
def sample_token_with_top_k(learner: Learner) -> None:
    logits = ROW.expand(DRAWS, -1)
    for k in (1, 3):
        expected = reference_top_k_filter(ROW[None], k)[0].softmax(-1)
        _expect_frequencies(_sample(learner, logits, 1.0, top_k=k, seed=20 + k), expected,
                            f"sample_token(logits, 1.0, top_k={k})")


@CHECKS.add(points=1, hint="draw with the generator you are given (torch.multinomial(probs, 1, "
                           "generator=generator)), so that the same seed gives the same tokens")
def sample_token_repeats_with_the_same_seed(learner: Learner) -> None:
    logits = torch.randn(200, 12, generator=seeded(3))
    first, again, other = (_sample(learner, logits, 1.0, seed=seed) for seed in (5, 5, 6))
    for got in (first, again, other):
        _expect_ids(got, 200, "sample_token(200 rows, 1.0, generator=...)")
    if not torch.equal(first, again):
        fail(f"two calls with generators seeded alike drew different tokens in "
             f"{int((first != again).sum())} of 200 rows")
    if torch.equal(first, other):
        fail("generators with different seeds drew the same 200 tokens: is the generator used?")


# ------------------------------------------------------------------ prefill_and_expand
K_CONFIG = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16, max_seq_len=32)


def _prefill(learner: Learner, b: int = 2, t: int = 5, k: int = 3, new: int = 4) -> tuple[Any, Any, dict[str, Any]]:
    """The learner's ``(logits, cache)`` and the reference, with the positions each run processed."""
    prefill_and_expand = learner.function("prefill_and_expand")
    model = Llama(K_CONFIG, seed=0).eval()
    ids = torch.randint(0, K_CONFIG.vocab_size, (b, t), generator=seeded(30 + k))
    fed: list[int] = []
    hook = model.tok_embeddings.register_forward_hook(lambda module, inputs, output: fed.append(inputs[0].numel()))
    try:
        got = expect_pair(prefill_and_expand(model, ids.clone(), k, new), "prefill_and_expand", "(logits, cache)")
        learner_fed = sum(fed)
        with torch.no_grad():
            cache = model.new_cache(b, t + new)
            logits = model(ids, cache=cache)[:, -1].repeat_interleave(k, dim=0)
            cache.repeat_rows(k)
    finally:
        hook.remove()
    return got, (logits, cache), dict(b=b, t=t, k=k, new=new, fed=learner_fed)


@CHECKS.add(points=2, hint="run the prompts once, take the last position's logits (b, v) and repeat each row k "
                           "times in place: logits.repeat_interleave(k, dim=0) gives rows i*k .. i*k+k-1 to prompt i")
def prefill_logits_are_each_prompts_last_logits_k_times(learner: Learner) -> None:
    (logits, _), (expected, _), shape = _prefill(learner)
    expect_tensor(logits, expected, f"logits of prefill_and_expand(b={shape['b']}, k={shape['k']})", atol=1e-6,
                  rtol=1e-5)


@CHECKS.add(points=1, hint="every layer's keys and values must hold each prompt's rows k times, in the order "
                           "prompt 0 x k, prompt 1 x k, ...: cache.repeat_rows(k), or repeat_interleave on the batch "
                           "axis (repeat would interleave the prompts)")
def cache_holds_each_prompt_k_times(learner: Learner) -> None:
    (_, cache), (_, expected), shape = _prefill(learner)
    if not isinstance(cache, KVCache):
        fail(f"prefill_and_expand should return the model's KVCache, got {type(cache).__name__}")
    expect_equal(cache.batch_size, shape["b"] * shape["k"], "the cache's batch size")
    t = shape["t"]  # the prompt's positions; the room after them is another check's business
    for layer, (k, v) in enumerate(zip(expected.k, expected.v)):
        expect_tensor(cache.k[layer][:, :, :t], k[:, :, :t], f"cache.k[{layer}] at the prompt's positions",
                      atol=1e-6, rtol=1e-5)
        expect_tensor(cache.v[layer][:, :, :t], v[:, :, :t], f"cache.v[{layer}] at the prompt's positions",
                      atol=1e-6, rtol=1e-5)


@CHECKS.add(points=1, hint="make the cache for the b prompts with room for t + max_new_tokens positions "
                           "(model.new_cache(b, t + max_new_tokens)): decoding writes after the prompt")
def cache_has_room_for_the_answers(learner: Learner) -> None:
    (_, cache), _, shape = _prefill(learner)
    if not isinstance(cache, KVCache):
        fail(f"prefill_and_expand should return the model's KVCache, got {type(cache).__name__}")
    expect_equal(cache.length, shape["t"], "cache.length after the prefill")
    expect_equal(cache.capacity, shape["t"] + shape["new"], "the cache's capacity")


@CHECKS.add(points=1, hint="the point of the exercise: feed the b prompts through the model once, then copy the "
                           "cache; repeating the prompts k times before the forward does k times the work")
def the_prompts_go_through_the_model_once(learner: Learner) -> None:
    _, _, shape = _prefill(learner)
    once = shape["b"] * shape["t"]
    if shape["fed"] != once:
        fail(f"the model processed {shape['fed']} positions for {shape['b']} prompts of {shape['t']} tokens and "
             f"k={shape['k']}; running each prompt once processes {once}")
