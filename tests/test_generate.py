"""Generation: greedy agrees with and without the cache and with transformers; sampling is
seeded; top-k/top-p never let a filtered token through."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minillama.generate import filter_logits, generate, sample_next
from minillama.hf import to_hf

# derandomize: the same examples on every run, so CI is reproducible.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def prompts(padded: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(21)
    if not padded:
        return torch.randint(0, 97, (1, 7), generator=gen), None
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :3], mask[2, :6] = 0, 0
    return torch.randint(1, 97, (3, 9), generator=gen) * mask, mask


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["single", "left-padded"])
def test_greedy_cache_no_cache_and_transformers_agree(random_llama, backend: str, padded: bool) -> None:
    model = random_llama(seed=0, n_kv_heads=2)
    model.attn_backend = backend
    ids, mask = prompts(padded)
    cached = generate(model, ids, 16, attention_mask=mask)
    uncached = generate(model, ids, 16, attention_mask=mask, use_cache=False)
    hf = to_hf(model)
    hf.set_attn_implementation(backend)
    assert hf.generation_config.eos_token_id is None  # not transformers' default of 2: no early stop
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert cached.shape == (ids.shape[0], ids.shape[1] + 16)
    assert torch.equal(cached[:, :ids.shape[1]], ids)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, theirs)
    assert len(set(cached[:, ids.shape[1]:].flatten().tolist())) > 5  # not a degenerate repetition


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["single", "left-padded"])
def test_cached_step_logits_equal_full_forward(random_llama, backend: str, padded: bool) -> None:
    model = random_llama(seed=5, n_heads=8, n_kv_heads=2)
    model.attn_backend = backend
    ids, mask = prompts(padded)
    mask = torch.ones_like(ids) if mask is None else mask
    cache = model.new_cache(ids.shape[0], 30)
    step, seen = ids, ids
    with torch.no_grad():
        for _ in range(12):
            incremental = model(step, attention_mask=mask, cache=cache)[:, -1]
            full = model(seen, attention_mask=mask)[:, -1]
            torch.testing.assert_close(incremental, full, rtol=0, atol=1e-5)
            step = full.argmax(-1, keepdim=True)
            seen = torch.cat((seen, step), dim=1)
            mask = torch.cat((mask, torch.ones_like(step)), dim=1)
    assert cache.length == seen.shape[1] - 1


def test_sampling_is_reproducible_per_seed(random_llama) -> None:
    model = random_llama(seed=6)
    ids, mask = prompts(padded=True)
    kwargs = dict(attention_mask=mask, temperature=1.0, top_k=40, top_p=0.95)
    first = generate(model, ids, 12, seed=7, **kwargs)
    assert torch.equal(first, generate(model, ids, 12, seed=7, **kwargs))
    assert not torch.equal(first, generate(model, ids, 12, seed=8, **kwargs))
    assert torch.equal(first, generate(model, ids, 12, seed=7, use_cache=False, **kwargs))


def test_eos_stops_a_row_and_pads_it(random_llama) -> None:
    model = random_llama(seed=4, n_kv_heads=2)
    ids, mask = prompts(padded=True)
    free = generate(model, ids, 10, attention_mask=mask)
    eos = int(free[0, ids.shape[1] + 2])  # row 0's third new token
    out = generate(model, ids, 10, attention_mask=mask, eos_id=eos, pad_id=0)
    for row in range(3):
        new = free[row, ids.shape[1]:].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        got = out[row, ids.shape[1]:].tolist()
        assert got[:stop] == new[:stop]
        assert all(token == 0 for token in got[stop:])
    # Once every row has finished there is no point in decoding further.
    single = generate(model, ids[:1], 10, eos_id=eos)
    assert single.shape[1] <= ids.shape[1] + 3 and int(single[0, -1]) == eos


def test_finished_rows_leave_the_batch_and_the_others_run_as_alone(random_llama) -> None:
    model = random_llama(seed=5, n_kv_heads=2)
    ids, mask = prompts(padded=True)
    free = generate(model, ids, 10, attention_mask=mask)
    stops = [int(free[0, ids.shape[1] + 1]), int(free[1, ids.shape[1] + 4])]  # rows 0 and 1 stop early
    out = generate(model, ids, 10, attention_mask=mask, eos_id=stops)
    for row in range(3):
        real = int(mask[row].sum())
        alone = generate(model, ids[row:row + 1, -real:], 10, eos_id=stops)[0, real:].tolist()
        got = out[row, ids.shape[1]:].tolist()
        assert got[:len(alone)] == alone and all(token == 0 for token in got[len(alone):])


def test_uniforms_make_each_rows_draws_its_own(random_llama) -> None:
    model = random_llama(seed=6, n_kv_heads=2)
    ids, mask = prompts(padded=True)
    uniforms = torch.rand(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = generate(model, ids, 8, temperature=1.0, attention_mask=mask, uniforms=uniforms)
    assert torch.equal(out, generate(model, ids, 8, temperature=1.0, attention_mask=mask, uniforms=uniforms))
    # Row 2 draws with its own numbers: alone, or beside other rows, it writes the same tokens.
    real = int(mask[2].sum())
    alone = generate(model, ids[2:, -real:], 8, temperature=1.0, uniforms=uniforms[2:])
    assert torch.equal(alone[0, real:], out[2, ids.shape[1]:])
    with pytest.raises(ValueError, match=r"uniforms must be \(batch \* num_samples, max_new_tokens\) = \(3, 8\)"):
        generate(model, ids, 8, temperature=1.0, attention_mask=mask, uniforms=uniforms[:, :4])


def test_generate_restores_training_mode_and_checks_arguments(random_llama) -> None:
    model = random_llama().train()
    ids = torch.zeros(1, 4, dtype=torch.long)
    generate(model, ids, 2)
    assert model.training
    with pytest.raises(ValueError, match="max_seq_len=64"):
        generate(model, ids, 61)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        generate(model, ids, -1)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, ids, 2, temperature=-0.5)
    with pytest.raises(ValueError, match=r"top_k must be None or >= 1"):
        filter_logits(torch.zeros(1, 5), top_k=0)
    with pytest.raises(ValueError, match=r"top_p must be None or in \(0, 1\]"):
        filter_logits(torch.zeros(1, 5), top_p=1.5)


def test_prompt_ids_are_range_checked_and_the_output_is_usable_in_autograd(random_llama) -> None:
    model = random_llama()
    with pytest.raises(ValueError, match="token ids must be in"):
        generate(model, torch.full((1, 3), model.config.vocab_size), 2)
    # The decoding loop runs in inference mode; its result must still serve as training labels.
    out = generate(model, torch.zeros(1, 4, dtype=torch.long), 3)
    assert not out.is_inference()
    logits = model(out)
    torch.nn.functional.cross_entropy(logits[0, :-1], out[0, 1:]).backward()
    assert model.output.weight.grad is not None


# --------------------------------------------------------------------------- filtering
def top_k_set(values: list[float], k: int) -> set[int]:
    return set(sorted(range(len(values)), key=lambda i: -values[i])[:k])


def nucleus(values: list[float], p: float, candidates: set[int]) -> set[int]:
    """The smallest set of most likely candidates whose softmax mass (over the candidates) reaches p,
    in float64; tokens are added one by one until the running mass reaches p."""
    order = sorted(candidates, key=lambda i: -values[i])
    top = values[order[0]]
    weights = [math.exp(values[i] - top) for i in order]
    total, mass, kept = sum(weights), 0.0, set()
    for i, w in zip(order, weights):
        kept.add(i)
        mass += w / total
        if mass >= p:
            break
    return kept


def margin_to_p(values: list[float], p: float, candidates: set[int]) -> float:
    """How close any running mass comes to p: float32 and float64 may disagree inside that margin."""
    order = sorted(candidates, key=lambda i: -values[i])
    weights = [math.exp(values[i] - values[order[0]]) for i in order]
    total, mass, closest = sum(weights), 0.0, 1.0
    for w in weights:
        mass += w / total
        closest = min(closest, abs(mass - p))
    return closest


distinct_logits = st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=2, max_size=40, unique=True)


def survivors(filtered: torch.Tensor) -> set[int]:
    return set(torch.isfinite(filtered[0]).nonzero().flatten().tolist())


def draws(logits: torch.Tensor, n: int, seed: int, **kwargs) -> set[int]:
    batch = logits.expand(n, -1)
    return set(sample_next(batch, temperature=1.0, generator=torch.Generator().manual_seed(seed), **kwargs).tolist())


@PROPERTY
@given(values=distinct_logits, data=st.data())
def test_top_k_keeps_exactly_the_k_largest(values: list[float], data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(values)))
    logits = torch.tensor([values])
    allowed = top_k_set(values, k)
    assert survivors(filter_logits(logits, top_k=k)) == allowed
    assert draws(logits, 64, seed=k, top_k=k) <= allowed


@PROPERTY
@given(values=distinct_logits, p=st.floats(0.05, 1.0))
def test_top_p_keeps_the_smallest_nucleus(values: list[float], p: float) -> None:
    everything = set(range(len(values)))
    assume(margin_to_p(values, p, everything) > 1e-4)
    logits = torch.tensor([values])
    allowed = nucleus(values, p, everything)
    assert survivors(filter_logits(logits, top_p=p)) == allowed
    assert draws(logits, 64, seed=len(values), top_p=p) <= allowed


@PROPERTY
@given(values=distinct_logits, data=st.data())
def test_top_k_then_top_p(values: list[float], data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(values)))
    p = data.draw(st.floats(0.05, 1.0))
    top_k = top_k_set(values, k)
    assume(margin_to_p(values, p, top_k) > 1e-4)
    logits = torch.tensor([values])
    allowed = nucleus(values, p, top_k)  # top-p measures mass within the top k
    assert survivors(filter_logits(logits, top_k=k, top_p=p)) == allowed
    assert draws(logits, 64, seed=k, top_k=k, top_p=p) <= allowed


def test_many_seeds_reach_every_allowed_token_and_nothing_else() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(9)) * 2
    allowed = top_k_set(logits[0].tolist(), 3)
    seen = set()
    for seed in range(200):
        seen |= draws(logits, 4, seed=seed, top_k=3)
    assert seen == allowed
    nucleus_set = nucleus(logits[0].tolist(), 0.5, set(range(50)))
    seen = set()
    for seed in range(200):
        seen |= draws(logits, 4, seed=seed, top_p=0.5)
    assert seen == nucleus_set


def test_temperature_zero_is_argmax_and_temperature_sharpens() -> None:
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(10))
    assert torch.equal(sample_next(logits), logits.argmax(-1))
    cold = sample_next(logits.expand(6, 30).repeat(50, 1), temperature=0.05,
                       generator=torch.Generator().manual_seed(0))
    assert (cold == logits.argmax(-1).repeat(50)).float().mean() > 0.95


# --------------------------------------------------------------------------- K samples, static cache, compile
def k_sample_inputs(k: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    ids, mask = prompts(padded=True)
    return ids, mask, torch.rand(ids.shape[0] * k, n, generator=gen, dtype=torch.float64)


def test_one_prefill_expanded_k_times_equals_k_prefills(random_llama) -> None:
    model = random_llama(seed=0, n_kv_heads=2)
    ids, mask, uniforms = k_sample_inputs(k=4, n=10)
    once = generate(model, ids, 10, temperature=1.0, attention_mask=mask, uniforms=uniforms, num_samples=4,
                    eos_id=[7, 8, 9])
    each = generate(model, ids.repeat_interleave(4, 0), 10, temperature=1.0, attention_mask=mask.repeat_interleave(4, 0),
                    uniforms=uniforms, eos_id=[7, 8, 9])
    assert once.shape[0] == 12 and torch.equal(once, each)
    assert torch.equal(once[::4, :ids.shape[1]], ids)  # rows i k .. i k + k - 1 continue prompt i
    greedy = generate(model, ids, 10, attention_mask=mask, num_samples=3)
    assert torch.equal(greedy, generate(model, ids, 10, attention_mask=mask).repeat_interleave(3, 0))
    with pytest.raises(ValueError, match=r"uniforms must be \(batch \* num_samples, max_new_tokens\) = \(12, 10\)"):
        generate(model, ids, 10, temperature=1.0, attention_mask=mask, uniforms=uniforms[:3], num_samples=4)
    with pytest.raises(ValueError, match="num_samples must be an int >= 1, got 0"):
        generate(model, ids, 10, num_samples=0)


def test_cache_repeat_rows_copies_each_row_in_place(tiny_config) -> None:
    from minillama.attention import KVCache

    cache = KVCache(tiny_config(), batch_size=2, max_seq_len=4)
    for layer in range(len(cache.k)):
        cache.k[layer][1], cache.v[layer][1] = 1.0, 2.0
    cache.repeat_rows(3)
    assert cache.batch_size == 6
    assert [float(k.sum()) for k in cache.k[0][:, 0, 0, :1]] == [0, 0, 0, 1, 1, 1]
    assert float(cache.v[-1][3:].min()) == 2.0


@pytest.mark.slow
def test_compiled_decoding_step_writes_the_same_tokens(random_llama) -> None:
    model = random_llama(seed=0, n_kv_heads=2)
    ids, mask, uniforms = k_sample_inputs(k=2, n=12)
    eager = generate(model, ids, 12, temperature=1.0, attention_mask=mask, uniforms=uniforms, num_samples=2,
                     eos_id=[7, 8, 9])
    compiled = generate(model, ids, 12, temperature=1.0, attention_mask=mask, uniforms=uniforms, num_samples=2,
                        eos_id=[7, 8, 9], compile=True)
    assert torch.equal(eager, compiled)
    assert torch.equal(generate(model, ids[:1], 12, compile=True), generate(model, ids[:1], 12))
