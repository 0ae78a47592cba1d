"""Probes of a pretrained language model: what it knows (fact cloze), whether it can read its
context (the copying probe), what its loss is worth (the unigram baseline), and what it writes.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..data.lexicon import ANIMALS, COLOURS, PEOPLE, SPOTS, STORY_THINGS
from ..generate import generate
from ..model import Llama
from ..sequences import eval_mode, pad_rows, sequence_logprobs
from ..tokenizer import Tokenizer

# What the copying probe's lists are made of: TinyWorld's nouns and small numbers, so that the
# lists read like the training text. (Some animals and colours of the lexicon never occur in a
# given world's text; a model that copies repeats those as cheaply as the rest.)
COPY_WORDS: tuple[str, ...] = ANIMALS + COLOURS + STORY_THINGS + SPOTS + tuple(str(i) for i in range(31))
SAMPLE_PROMPTS = ("Mia", "The red ball belongs to", "One day", "Tom had 3 apples.")


def unigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Nats per token of ``val`` under the unigram distribution of ``train`` (add-one smoothed):
    the loss of a model that ignores context entirely."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val].mean())


@torch.no_grad()
def continuation_logprobs(model: Llama, prefixes: list[list[int]], continuations: list[list[int]],
                          pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """Sum of log-probabilities of each continuation after its prefix: ``(n,)``."""
    totals = []
    for start in range(0, len(prefixes), batch_size):
        pre, cont = prefixes[start:start + batch_size], continuations[start:start + batch_size]
        ids, mask = pad_rows([p + c for p, c in zip(pre, cont)], pad_id)
        scored, _ = pad_rows([[0] * len(p) + [1] * len(c) for p, c in zip(pre, cont)])
        totals.append(sequence_logprobs(model, ids, mask, scored))
    return torch.cat(totals)


@torch.no_grad()
def cloze_accuracy(model: Llama, tok: Tokenizer, rows: list[dict[str, Any]], batch_size: int = 64) -> dict[str, Any]:
    """Multiple-choice accuracy (the true answer has the highest log-probability among the
    candidates), greedy exact-completion accuracy (``batch_size`` prompts decoded at a time), and
    the chance level, per relation and overall."""
    prompts = [[tok.bos_id] + tok.encode(row["prompt"]) for row in rows]
    flat = [(i, c) for i, row in enumerate(rows) for c in row["candidates"]]
    with eval_mode(model):
        scores = continuation_logprobs(model, [prompts[i] for i, _ in flat], [tok.encode(c) for _, c in flat],
                                       tok.pad_id)
    ranked = np.zeros(len(rows))
    offset = 0
    for i, row in enumerate(rows):
        n = len(row["candidates"])
        ranked[i] = row["candidates"][int(scores[offset:offset + n].argmax())] == row["answer"]
        offset += n
    answers = [tok.encode(row["answer"]) for row in rows]
    completions = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_rows(prompts[start:start + batch_size], tok.pad_id, left=True)
        out = generate(model, ids, max_new_tokens=max(map(len, answers)), attention_mask=mask)
        completions += out[:, ids.shape[1]:].tolist()
    greedy = np.array([tok.decode(completions[i][:len(a)]) == row["answer"]
                       for i, (a, row) in enumerate(zip(answers, rows))], dtype=float)
    chance = np.array([1.0 / len(row["candidates"]) for row in rows])
    relations = np.array([row["relation"] for row in rows])
    by_relation = {rel: {"n": int((relations == rel).sum()), "ranked": float(ranked[relations == rel].mean()),
                         "greedy": float(greedy[relations == rel].mean()),
                         "chance": float(chance[relations == rel].mean())}
                   for rel in sorted(set(relations))}
    return {"n": len(rows), "ranked": float(ranked.mean()), "greedy": float(greedy.mean()),
            "chance": float(chance.mean()), "by_relation": by_relation}


@torch.no_grad()
def copying_probe(model: Llama, tok: Tokenizer, n: int = 64, length: int = 6, seed: int = 0,
                  words: tuple[str, ...] = COPY_WORDS) -> dict[str, Any]:
    """Can the model copy from its context? ``n`` lists of ``length`` distinct random ``words``,
    each said and then repeated word for word (``"Mia wrote down: frog, 17, cup. Leo repeated:
    frog, 17, cup."``). Returns the nats per token the model pays for the first list and for the
    repeat. A model that copies (an induction head: find the earlier occurrence, predict what came
    after it) pays almost nothing for the repeat; one that cannot pays what it paid the first time,
    and then cannot repeat, list or sort what a prompt says either."""
    if length > len(words):
        raise ValueError(f"length must be <= len(words) = {len(words)}, got {length}")
    rng = random.Random(f"copying:{seed}")
    names = [name for name, _ in PEOPLE]
    prefixes, continuations = [], []
    for _ in range(n):
        said, heard = rng.sample(names, 2)
        items = tok.encode(" " + ", ".join(rng.sample(words, length)) + ".")
        first = [tok.bos_id] + tok.encode(f"{said} wrote down:")
        prefixes += [first, first + items + tok.encode(f" {heard} repeated:")]
        continuations += [items, items]
    with eval_mode(model):
        nats = -continuation_logprobs(model, prefixes, continuations, tok.pad_id).view(n, 2)
    per_token = nats.sum(0) / sum(len(c) for c in continuations[::2])
    first_list, repeat = float(per_token[0]), float(per_token[1])
    return {"n": n, "length": length, "first_list_nats": first_list, "repeat_nats": repeat,
            "repeat_over_first": repeat / first_list}


@torch.no_grad()
def continuations(model: Llama, tok: Tokenizer, prompts: tuple[str, ...] = SAMPLE_PROMPTS, seed: int = 0,
                  max_new_tokens: int = 40) -> list[dict[str, str]]:
    """Greedy and sampled (T=0.8, top-p 0.95) continuations of a few prompts, batched with left padding."""
    ids, mask = pad_rows([[tok.bos_id] + tok.encode(p) for p in prompts], tok.pad_id, left=True)
    width = ids.shape[1]
    greedy = generate(model, ids, max_new_tokens, eos_id=tok.eos_id, attention_mask=mask, pad_id=tok.pad_id)
    sampled = generate(model, ids, max_new_tokens, temperature=0.8, top_p=0.95, eos_id=tok.eos_id, seed=seed,
                       attention_mask=mask, pad_id=tok.pad_id)
    return [{"prompt": p, "greedy": tok.decode(greedy[i, width:].tolist()),
             "sampled (T=0.8, top-p 0.95)": tok.decode(sampled[i, width:].tolist())} for i, p in enumerate(prompts)]
