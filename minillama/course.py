"""``minillama course``: the end-to-end course pipeline, stage by stage, and its report.

    minillama course --preset tiny --out runs/course      (``make course`` runs exactly this)

Stages, each in its own folder under ``--out`` and skipped when its result is already there (so
an interrupted run continues where it stopped; the training stage resumes from its last
checkpoint):

1. ``data``       a TinyWorld: pretraining text, chat and safety tasks, cloze prompts;
2. ``tokenizer``  a SentencePiece BPE tokenizer trained on the training text;
3. ``tokens``     the text encoded into ``train.bin`` / ``val.bin`` (one document = BOS ... EOS);
4. ``pretrain``   the model trained on the tokens (the shared training loop);
5. ``eval``       validation loss against a unigram baseline, factual cloze accuracy on
                  held-out phrasings, the copying probe, greedy and sampled continuations;
6. ``sft``        supervised fine-tuning on chat and safety tasks (loss on answer tokens only);
7. ``rm_helpfulness``, ``rm_safety``  reward models from the SFT model (ranking loss with margin),
                  and the same without the margin, for comparison; the two stages run side by
                  side, one process each, where torch has more than one thread to share;
8. ``rejection``  two rounds of rejection sampling scored by both reward models, plus the
                  reward-vs-K study;
9. ``dpo``        DPO (NLL-regularised) from the SFT model on its own first-round samples, ranked
                  by the oracle (no more borderline pairs than off-limits ones);
10. ``stages``    every stage's model answers the held-out test prompts; the oracle scores them;

then ``report.md`` with the figures and plots. ``--until pretrain`` stops after the language-model
part (issue 5's pipeline).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import PRESETS
from .data.lexicon import ANIMALS, COLOURS, PEOPLE, SPOTS, STORY_THINGS
from .data.preferences import RATING_LEVELS
from .data.tasks import SAFETY_CLASSES
from .fileio import atomic_write, save_json
from .generate import generate
from .model import Llama
from .tokenizer import Tokenizer

# Per-preset training budget: tiny fits in a few minutes on a 2-core CPU.
# rm_samples: the reward models learn to judge the policy's own answers from pairs of its samples
# (8 samples give most prompts a pair of them at each rating level). rs_temperature: with the tiny
# reward models the pick among 8 samples is worth more to the oracle at 0.7 than at 1.0.
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": dict(steps=320, batch_size=16, seq_len=256, lr=2e-3, warmup=30, vocab_size=2048, chars=3_000_000,
                 sft_examples=6000, sft_lr=1e-3, rm_prompts=600, rm_samples=8, rm_lr=5e-4,
                 rs_prompts=600, rs_k=8, rs_lr=3e-4, rs_temperature=0.7, study_prompts=48,
                 dpo_pairs_per_prompt=4, dpo_lr=1e-4, dpo_beta=0.1, dpo_nll_alpha=0.2, eval_chat=1000, eval_safety=500),
    "small": dict(steps=2000, batch_size=32, seq_len=1024, lr=6e-4, warmup=100, vocab_size=8192, chars=30_000_000,
                  sft_examples=20000, sft_lr=3e-4, rm_prompts=2000, rm_samples=8, rm_lr=1e-4,
                  rs_prompts=2000, rs_k=8, rs_lr=1e-4, rs_temperature=1.0, study_prompts=128,
                  dpo_pairs_per_prompt=4, dpo_lr=3e-5, dpo_beta=0.1, dpo_nll_alpha=0.2, eval_chat=1000, eval_safety=500),
}
STAGE_ORDER = ("data", "tokenizer", "tokens", "pretrain", "eval", "sft", "rm_helpfulness", "rm_safety",
               "rejection", "dpo", "stages")
SAMPLE_PROMPTS = ("Mia", "The red ball belongs to", "One day", "Tom had 3 apples.")


def _done(path: Path) -> bool:
    return path.is_file()


def _log(message: str) -> None:
    print(f"[course] {message}", flush=True)


# ------------------------------------------------------------------------------------ stages
def stage_data(out: Path, seed: int, budget: dict[str, Any]) -> Path:
    from .data import cli as data_cli

    directory = out / "data"
    if not _done(directory / "manifest.json"):
        data_cli.main(["--out", str(directory), "--seed", str(seed), "--chars", str(budget["chars"]),
                       "--eval-chat", str(budget["eval_chat"]), "--eval-safety", str(budget["eval_safety"]),
                       "--quiet"])
    return directory


def stage_tokenizer(out: Path, data_dir: Path, vocab_size: int) -> Tokenizer:
    path = out / "tokenizer" / "tokenizer.model"
    if not _done(path):
        tok = Tokenizer.train(data_dir / "train.txt", vocab_size=vocab_size)
        tok.save(path)
    return Tokenizer.load(path)


def documents(path: Path) -> list[str]:
    """The blank-line-separated documents of a TinyWorld text file."""
    return [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]


def encode_documents(tok: Tokenizer, docs: list[str]) -> np.ndarray:
    """Every document as ``BOS ids EOS``, concatenated: the model learns where documents start
    and end, and a training window that spans two documents sees the boundary."""
    ids = tok.encode_batch(docs, bos=True, eos=True)
    return np.fromiter((i for doc in ids for i in doc), dtype=np.int64)


def stage_tokens(out: Path, data_dir: Path, tok: Tokenizer) -> Path:
    from .train import save_token_dataset

    directory = out / "tokens"
    if not _done(directory / "meta.json"):
        train = encode_documents(tok, documents(data_dir / "train.txt"))
        val = encode_documents(tok, documents(data_dir / "val.txt"))
        save_token_dataset(directory, train, val, tok.vocab_size, tokenizer=str(out / "tokenizer" / "tokenizer.model"))
    return directory


def stage_pretrain(out: Path, tokens_dir: Path, preset: str, budget: dict[str, Any], seed: int,
                   progress: bool) -> Path:
    from .train import pretrain

    run = out / "pretrain"
    if not _done(run / "model" / "model.safetensors"):
        argv = ["--preset", preset, "--data", str(tokens_dir), "--out", str(run), "--steps", str(budget["steps"]),
                "--batch-size", str(budget["batch_size"]), "--seq-len", str(budget["seq_len"]),
                "--lr", str(budget["lr"]), "--warmup", str(budget["warmup"]), "--seed", str(seed),
                "--eval-interval", str(max(1, budget["steps"] // 8)), "--checkpoint-interval",
                str(max(1, budget["steps"] // 8))]
        if not progress:
            argv.append("--no-progress")
        pretrain.main(argv)
    return run


# ------------------------------------------------------------------------------------ evaluation
def unigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Nats per token of ``val`` under the unigram distribution of ``train`` (add-one smoothed):
    the loss of a model that ignores context entirely."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val].mean())


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ``ids, mask (n, width)`` padded on the left or the right."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


@torch.no_grad()
def continuation_logprobs(model: Llama, prefixes: list[list[int]], continuations: list[list[int]],
                          pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """Sum of log-probabilities of each continuation after its prefix: ``(n,)``."""
    totals = []
    for start in range(0, len(prefixes), batch_size):
        pre, cont = prefixes[start:start + batch_size], continuations[start:start + batch_size]
        ids, mask = _pad([p + c for p, c in zip(pre, cont)], pad_id, left=False)
        logp = F.log_softmax(model(ids, attention_mask=mask).float(), dim=-1)
        token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)  # position j predicts token j+1
        target_pos = torch.arange(1, ids.shape[1])[None, :]
        first = torch.tensor([len(p) for p in pre])[:, None]
        last = torch.tensor([len(p) + len(c) for p, c in zip(pre, cont)])[:, None]
        totals.append((token_logp * ((target_pos >= first) & (target_pos < last))).sum(-1))
    return torch.cat(totals)


@torch.no_grad()
def cloze_accuracy(model: Llama, tok: Tokenizer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Multiple-choice accuracy (the true answer has the highest log-probability among the
    candidates), greedy exact-completion accuracy, and the chance level, per relation and overall."""
    model.eval()
    prompts = [[tok.bos_id] + tok.encode(row["prompt"]) for row in rows]
    flat = [(i, c) for i, row in enumerate(rows) for c in row["candidates"]]
    scores = continuation_logprobs(model, [prompts[i] for i, _ in flat], [tok.encode(c) for _, c in flat], tok.pad_id)
    ranked = np.zeros(len(rows))
    offset = 0
    for i, row in enumerate(rows):
        n = len(row["candidates"])
        ranked[i] = row["candidates"][int(scores[offset:offset + n].argmax())] == row["answer"]
        offset += n
    answers = [tok.encode(row["answer"]) for row in rows]
    completions = []
    for start in range(0, len(rows), model.config.max_batch_size):  # the KV cache holds max_batch_size rows
        ids, mask = _pad(prompts[start:start + model.config.max_batch_size], tok.pad_id, left=True)
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


# What the copying probe's lists are made of: TinyWorld's nouns and small numbers, so that the
# lists read like the training text. (Some animals and colours of the lexicon never occur in a
# given world's text; a model that copies repeats those as cheaply as the rest.)
COPY_WORDS: tuple[str, ...] = ANIMALS + COLOURS + STORY_THINGS + SPOTS + tuple(str(i) for i in range(31))


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
    model.eval()
    rng = random.Random(f"copying:{seed}")
    names = [name for name, _ in PEOPLE]
    prefixes, continuations = [], []
    for _ in range(n):
        said, heard = rng.sample(names, 2)
        items = tok.encode(" " + ", ".join(rng.sample(words, length)) + ".")
        first = [tok.bos_id] + tok.encode(f"{said} wrote down:")
        prefixes += [first, first + items + tok.encode(f" {heard} repeated:")]
        continuations += [items, items]
    nats = -continuation_logprobs(model, prefixes, continuations, tok.pad_id).view(n, 2)
    per_token = nats.sum(0) / sum(len(c) for c in continuations[::2])
    first_list, repeat = float(per_token[0]), float(per_token[1])
    return {"n": n, "length": length, "first_list_nats": first_list, "repeat_nats": repeat,
            "repeat_over_first": repeat / first_list}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.no_grad()
def samples(model: Llama, tok: Tokenizer, prompts: tuple[str, ...], seed: int) -> list[dict[str, str]]:
    """Greedy and sampled continuations of a few prompts, batched with left padding."""
    ids, mask = _pad([[tok.bos_id] + tok.encode(p) for p in prompts], tok.pad_id, left=True)
    width = ids.shape[1]
    greedy = generate(model, ids, max_new_tokens=40, eos_id=tok.eos_id, attention_mask=mask, pad_id=tok.pad_id)
    sampled = generate(model, ids, max_new_tokens=40, temperature=0.8, top_p=0.95, eos_id=tok.eos_id, seed=seed,
                       attention_mask=mask, pad_id=tok.pad_id)
    return [{"prompt": p, "greedy": tok.decode(greedy[i, width:].tolist()),
             "sampled (T=0.8, top-p 0.95)": tok.decode(sampled[i, width:].tolist())} for i, p in enumerate(prompts)]


def stage_eval(out: Path, data_dir: Path, tokens_dir: Path, run: Path, tok: Tokenizer, seed: int) -> dict[str, Any]:
    from .train.data import open_split

    path = out / "eval" / "metrics.json"
    if _done(path):
        return json.loads(path.read_text())
    model = Llama.from_pretrained(run / "model", dtype=torch.float32).eval()
    records = read_jsonl(run / "metrics.jsonl")
    val_records = [r for r in records if r["kind"] == "val"]
    train_records = [r for r in records if r["kind"] == "train"]
    train_tokens, val_tokens = open_split(tokens_dir, "train"), open_split(tokens_dir, "val")
    metrics = {
        "val_loss": val_records[-1]["val_loss"] if val_records else None,
        "unigram_val_loss": unigram_cross_entropy(np.asarray(train_tokens), np.asarray(val_tokens), tok.vocab_size),
        "uniform_loss": math.log(tok.vocab_size),
        "train_loss_first": train_records[0]["loss"] if train_records else None,
        "train_loss_last": train_records[-1]["loss"] if train_records else None,
        "tokens_per_s_median": float(np.median([r["tokens_per_s"] for r in train_records])) if train_records else None,
        "steps": train_records[-1]["step"] if train_records else None,
        "parameters": model.config.num_parameters(),
        "cloze": {split: cloze_accuracy(model, tok, read_jsonl(data_dir / f"cloze_{split}.jsonl"))
                  for split in ("val", "test")},
        "copying": copying_probe(model, tok, seed=seed),
        "samples": samples(model, tok, SAMPLE_PROMPTS, seed),
    }
    save_json(path, metrics)
    return metrics


# ------------------------------------------------------------------------------------ post-training
def _tasks(data_dir: Path, *names: str) -> list:
    from .post.sft import read_tasks

    return read_tasks(*(data_dir / f"{name}.jsonl" for name in names))


def stage_sft(out: Path, data_dir: Path, budget: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    from .post.sft import run_sft

    run = out / "sft"
    if not _done(run / "sft_metrics.json"):
        run_sft(out / "pretrain" / "model", out / "tokenizer" / "tokenizer.model", data_dir, run, epochs=2,
                batch_size=budget["batch_size"], lr=budget["sft_lr"], weight_decay=0.1, seed=seed,
                max_examples=budget["sft_examples"], eval_before=False, eval_prompts=0, eval_safety=0,
                progress=progress)
    return json.loads((run / "sft_metrics.json").read_text())


def stage_reward(out: Path, data_dir: Path, tok: Tokenizer, kind: str, budget: dict[str, Any], seed: int,
                 progress: bool) -> dict[str, Any]:
    """Pairs from the SFT model's own samples (plus references and distractors) labelled by the
    oracle; a reward model trained with Llama 2's margin and one without; held-out accuracy."""
    from .data import Oracle
    from .post.reward import (build_preference_pairs, level_counts, load_pairs, load_reward_model, pair_accuracy,
                              reward_tasks, save_pairs, train_reward_model)

    run = out / f"rm_{kind}"
    if _done(run / "metrics.json"):
        return json.loads((run / "metrics.json").read_text())
    sft_dir = out / "sft" / "model"
    paths = {split: run / f"pairs_{split}.jsonl" for split in ("train", "val")}
    if not all(_done(p) for p in paths.values()):
        sft = Llama.from_pretrained(sft_dir, dtype=torch.float32).eval()
        for split, n in (("train", budget["rm_prompts"]), ("val", budget["rm_prompts"] // 3)):
            tasks = reward_tasks(_tasks(data_dir, f"chat_{split}"), _tasks(data_dir, f"safety_{split}"), kind, n)
            pairs = build_preference_pairs(sft, tok, Oracle(tasks), tasks, kind, n_samples=budget["rm_samples"],
                                           seed=seed + (split == "val"), progress=progress)
            save_pairs(paths[split], pairs)
    train_pairs, val_pairs = load_pairs(paths["train"]), load_pairs(paths["val"])
    metrics: dict[str, Any] = {"kind": kind, "train_pairs": level_counts(train_pairs),
                               "val_pairs": level_counts(val_pairs)}
    for variant, use_margin in (("margin", True), ("no_margin", False)):
        if not _done(run / variant / "model" / "model.safetensors"):
            train_reward_model(sft_dir, tok, train_pairs, run / variant, epochs=1.0, lr=budget["rm_lr"],
                               use_margin=use_margin, seed=seed, progress=progress)
        metrics[variant] = pair_accuracy(load_reward_model(run / variant / "model"), tok, val_pairs)
    save_json(run / "metrics.json", metrics)
    return metrics


def _reward_stage_alone(out: Path, data_dir: Path, kind: str, budget: dict[str, Any], seed: int,
                        progress: bool) -> float:
    """One reward-model stage in a process of its own, on one thread; returns its seconds."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    stage_reward(out, data_dir, Tokenizer.load(out / "tokenizer" / "tokenizer.model"), kind, budget, seed, progress)
    return time.perf_counter() - start


def reward_stages_side_by_side(out: Path, data_dir: Path, budget: dict[str, Any], seed: int,
                               progress: bool = False) -> dict[str, float]:
    """Both reward-model stages at once, each in its own process on one thread. They depend on the
    SFT model alone, and the tiny model's small matrices keep a second thread of one process half
    idle: on a 2-core CPU two one-thread processes finish both stages in about 80% of the time the
    two stages take one after the other. With ``progress`` the helpfulness stage shows its bars
    (two processes' bars would overwrite each other). Returns each stage's seconds."""
    import multiprocessing

    kinds = ("helpfulness", "safety")
    jobs = [(out, data_dir, kind, budget, seed, progress and kind == kinds[0]) for kind in kinds]
    with multiprocessing.get_context("spawn").Pool(len(kinds)) as pool:
        seconds = pool.starmap(_reward_stage_alone, jobs)
    return {f"rm_{kind}": s for kind, s in zip(kinds, seconds)}


def stage_rejection(out: Path, data_dir: Path, tok: Tokenizer, budget: dict[str, Any], seed: int,
                    progress: bool) -> dict[str, Any]:
    """Two rounds of rejection sampling, then the reward-vs-K study on held-out prompts."""
    from .data import Oracle
    from .post.rejection import plot_reward_vs_k, reward_vs_k_study, run_rejection_sampling
    from .post.reward import RewardScorer
    from .post.sft import val_tasks

    run = out / "rejection"
    rm_dirs = (out / "rm_helpfulness" / "margin", out / "rm_safety" / "margin")
    if not _done(run / "metrics.json"):
        run_rejection_sampling(out / "sft", rm_dirs, tok, data_dir, run, rounds=2, k=budget["rs_k"],
                               temperature=budget["rs_temperature"], n_prompts=budget["rs_prompts"], epochs=1,
                               lr=budget["rs_lr"], batch_size=budget["batch_size"], eval_prompts=100,
                               eval_safety=50, seed=seed, progress=progress)
    if not _done(run / "reward_vs_k.json"):
        n = budget["study_prompts"]
        tasks = val_tasks(data_dir, n, n // 2)
        scorer = RewardScorer.load(rm_dirs[0] / "model", rm_dirs[1] / "model", tok, "cpu")
        sft = Llama.from_pretrained(out / "sft" / "model", dtype=torch.float32).eval()
        study = reward_vs_k_study(sft, tok, scorer, Oracle(tasks), tasks, temperatures=(0.6, 1.0, 1.4), k_max=32,
                                  seed=seed, progress=progress)
        save_json(run / "reward_vs_k.json", study)
        plot_reward_vs_k(study, run / "reward_vs_k.png")
    return {"rounds": json.loads((run / "metrics.json").read_text()),
            "reward_vs_k": json.loads((run / "reward_vs_k.json").read_text())}


def stage_dpo(out: Path, data_dir: Path, tok: Tokenizer, budget: dict[str, Any], seed: int, progress: bool) -> Path:
    """DPO from the SFT model, NLL-regularised, on pairs of its own samples for the rejection-sampling
    prompts (round 1's samples, ranked by the oracle: the same prompts, samples and judge as
    rejection sampling), with no more borderline pairs than off-limits ones (:func:`balance_risky`);
    the reward models' clear held-out pairs check its implicit reward. Writes the pairs it trained
    on and ``pairs_by_class.json`` (pairs per prompt class, before and after the balancing)."""
    from .post.dpo import balance_risky, clear_pairs, oracle_pairs, run_dpo
    from .post.reward import load_pairs, save_pairs

    run = out / "dpo"
    if not _done(run / "model" / "model.safetensors"):
        rows = read_jsonl(out / "rejection" / "round_1" / "samples.jsonl")
        on_policy = oracle_pairs([r["prompt"] for r in rows], [r["samples"] for r in rows],
                                 [r["oracle"] for r in rows], budget["dpo_pairs_per_prompt"])
        safety = {t.prompt: t.safety for t in _tasks(data_dir, "chat_train", "safety_train")}
        pairs = balance_risky(on_policy, safety, seed)
        save_pairs(run / "pairs.jsonl", pairs)  # `minillama dpo --pairs` takes this file to redo the stage
        save_json(run / "pairs_by_class.json", {
            name: {cls: sum(safety[p.prompt] == cls for p in group) for cls in SAFETY_CLASSES}
            for name, group in (("on_policy", on_policy), ("trained", pairs))})
        val = clear_pairs(load_pairs(out / "rm_helpfulness" / "pairs_val.jsonl",
                                     out / "rm_safety" / "pairs_val.jsonl"), 500, seed)
        model = run_dpo(out / "sft" / "model", tok, pairs, run, beta=budget["dpo_beta"],
                        nll_alpha=budget["dpo_nll_alpha"], lr=budget["dpo_lr"], batch_size=budget["batch_size"],
                        seed=seed, val_pairs=val, progress=progress)
        model.save_pretrained(run / "model")
    return run / "model"


STAGE_MODELS = {"pretrained": "pretrain/model", "sft": "sft/model", "rs_round_1": "rejection/round_1/model",
                "rs_round_2": "rejection/round_2/model", "dpo": "dpo/model"}
# The metric each stage is meant to improve, and the stage it is compared with.
STAGE_TARGETS = {"sft": ("pretrained", "helpful_accuracy"), "rs_round_1": ("sft", "combined"),
                 "rs_round_2": ("rs_round_1", "combined"), "dpo": ("sft", "combined")}


def stage_compare(out: Path, data_dir: Path, tok: Tokenizer, seed: int, progress: bool) -> dict[str, Any]:
    """Every stage's greedy answers to the same held-out test prompts, scored by the oracle, and the
    paired bootstrap change of each stage's target metric over the stage it builds on."""
    from .data import Oracle
    from .post.evaluate import evaluate_model, paired_difference, summary

    run = out / "stages"
    tasks = _tasks(data_dir, "chat_test", "safety_test")
    oracle = Oracle(tasks)
    results = {}
    for name, rel in STAGE_MODELS.items():
        path = run / f"{name}.json"
        if not _done(path):
            model = Llama.from_pretrained(out / rel, dtype=torch.float32).eval()
            save_json(path, summary(evaluate_model(model, tok, oracle, tasks, seed=seed, progress=progress)))
        results[name] = json.loads(path.read_text())
    changes = {}
    for name, (base, metric) in STAGE_TARGETS.items():
        a = np.array(results[base]["per_prompt"][metric], dtype=float)
        b = np.array(results[name]["per_prompt"][metric], dtype=float)
        mean, lo, hi = paired_difference(a, b, seed=seed)
        changes[name] = {"vs": base, "metric": metric, "mean": mean, "lo": lo, "hi": hi, "improves": bool(lo > 0)}
    save_json(run / "changes.json", changes)
    return {"results": results, "changes": changes}


# ------------------------------------------------------------------------------------ report
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_report(out: Path, preset: str, results: dict[str, Any], timings: dict[str, float]) -> Path:
    metrics = results["eval"]
    shutil.copyfile(out / "pretrain" / "loss.png", out / "loss.png")
    lines = [f"# minillama course report ({preset} preset)", "",
             "Every figure below was computed by this run (`minillama course`); nothing is copied in.", "",
             "## Pretraining", "", "![loss curve](loss.png)", "",
             "| measure | value |", "|---|---|",
             f"| parameters | {metrics['parameters']:,} |",
             f"| optimizer steps | {metrics['steps']} |",
             f"| median training speed | {metrics['tokens_per_s_median']:,.0f} tokens/s |",
             f"| first / last training loss | {metrics['train_loss_first']:.3f} / {metrics['train_loss_last']:.3f} |",
             f"| validation loss (nats/token) | {metrics['val_loss']:.3f} |",
             f"| unigram baseline on the same tokens | {metrics['unigram_val_loss']:.3f} |",
             f"| uniform baseline, log(vocab) | {metrics['uniform_loss']:.3f} |", "",
             "## Does the model know the world's facts?", "",
             "Cloze prompts in phrasings that never occur in the training text (e.g. \"If you visit Nina, "
             "you must travel to\"). *Ranked*: the true answer has the highest probability among the "
             "candidates of its kind (all towns, all pets, ...). *Greedy*: the model's own completion is "
             "exactly the answer.", "",
             "| split | prompts | ranked accuracy | greedy accuracy | chance (ranked) |", "|---|---|---|---|---|"]
    for split, c in metrics["cloze"].items():
        lines.append(f"| {split} | {c['n']} | {_pct(c['ranked'])} | {_pct(c['greedy'])} | {_pct(c['chance'])} |")
    lines += ["", "By relation (test split):", "", "| relation | prompts | ranked | greedy | chance |",
              "|---|---|---|---|---|"]
    for rel, c in metrics["cloze"]["test"]["by_relation"].items():
        lines.append(f"| {rel} | {c['n']} | {_pct(c['ranked'])} | {_pct(c['greedy'])} | {_pct(c['chance'])} |")
    if "copying" in metrics:  # eval metrics written before the probe existed lack it
        c = metrics["copying"]
        lines += ["", "## Can the model copy from its context?", "",
                  f"{c['n']} lists of {c['length']} random words and numbers, each said and then repeated word "
                  "for word (\"Mia wrote down: frog, 17, cup. Leo repeated: frog, 17, cup.\"). A model that copies "
                  "pays almost nothing for the repeat; this one pays "
                  f"{c['repeat_nats']:.2f} nats per token for it against {c['first_list_nats']:.2f} for the first "
                  f"list ({c['repeat_over_first']:.0%}). Tasks that ask to repeat, list or sort what the prompt "
                  "says rest on that skill (see the helpfulness table by task below)."]
    lines += ["", "## Samples", ""]
    for s in metrics["samples"]:
        lines.append(f"**{s['prompt']}**")
        for key, text in s.items():
            if key != "prompt":
                lines.append(f"- {key}: `{text.replace(chr(10), ' / ')}`")
        lines.append("")
    lines += post_training_report(out, results)
    lines += ["## Time per stage", "", "| stage | seconds (this invocation; a stage found done costs ~0) |",
              "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()]
    lines.append(f"| total | {sum(timings.values()):.1f} |")
    path = out / "report.md"
    atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path


def _accuracy_rows(metrics: dict[str, Any]) -> list[str]:
    rows = ["| reward model | loss | overall | " + " | ".join(RATING_LEVELS) + " |", "|---|---|---|" + "---|" * len(RATING_LEVELS)]
    for variant, label in (("margin", "with margin"), ("no_margin", "without margin")):
        acc = metrics[variant]
        levels = [_pct(acc["by_level"][lvl]["accuracy"]) + f" (n={acc['by_level'][lvl]['n']})"
                  if lvl in acc["by_level"] else "n/a" for lvl in RATING_LEVELS]
        rows.append(f"| {metrics['kind']} | {label} | {_pct(acc['accuracy'])} | " + " | ".join(levels) + " |")
    acc = metrics["margin"]
    if "ceiling" in acc:  # metrics written before pairs recorded their coin flips lack it
        levels = [_pct(acc["by_level"][lvl]["ceiling"]) if lvl in acc["by_level"] else "n/a" for lvl in RATING_LEVELS]
        rows.append(f"| {metrics['kind']} | a perfect judge | {_pct(acc['ceiling'])} | " + " | ".join(levels) + " |")
    return rows


def post_training_report(out: Path, results: dict[str, Any]) -> list[str]:
    """The Llama 2 recipe's sections of the report, for the stages that ran."""
    lines: list[str] = []
    if "stages" in results:
        from .post.evaluate import stage_table

        stages = results["stages"]
        lines += ["## Post-training, stage by stage (held-out test prompts, scored by the oracle)", "",
                  stage_table(stages["results"], compare="combined"), "",
                  "Each stage against the stage it builds on, on the metric it targets (paired bootstrap over "
                  "prompts, 95%):", "", "| stage | vs | metric | change | improves? |", "|---|---|---|---|---|"]
        for name, c in stages["changes"].items():
            lines.append(f"| {name} | {c['vs']} | {c['metric']} | {c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] "
                         f"| {'yes' if c['improves'] else 'no'} |")
        lines += ["", "Helpfulness accuracy by task kind:", ""]
        kinds = sorted({k for r in stages["results"].values() for k in r["by_kind"]})
        lines += ["| stage | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for name, r in stages["results"].items():
            cells = [f"{r['by_kind'][k]['helpful_accuracy']['mean']:.2f}"
                     if "helpful_accuracy" in r["by_kind"].get(k, {}) else "-" for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if "rm_helpfulness" in results and "rm_safety" in results:
        lines += ["## Reward models (held-out pairs)", ""]
        lines += _accuracy_rows(results["rm_helpfulness"]) + _accuracy_rows(results["rm_safety"])[2:] + [""]
        lines += ["*A perfect judge*: the accuracy the oracle itself expects on the same pairs. It gets every pair "
                  "right except the unsure ones it cannot order (equal scores, no finer signal on the axis), where "
                  "a coin flip chose the winner and any judge gets half. That, not 100%, bounds each reward model.",
                  ""]
    if "rejection" in results:
        lines += ["## Rejection sampling", "", "![rounds](rejection/rounds.png)", "",
                  "Max and median reward over the first K samples, and the oracle's score of the reward "
                  "models' pick against the oracle's own best pick:", "", "![reward vs K](rejection/reward_vs_k.png)", ""]
        lines += _kept_rows(results["rejection"]["rounds"]["rounds"])
    pairs_by_class = out / "dpo" / "pairs_by_class.json"
    if "dpo" in results and pairs_by_class.is_file():
        counts = json.loads(pairs_by_class.read_text())
        lines += ["## DPO", "", "On-policy pairs (round 1's samples ranked by the oracle) per prompt class, and those "
                  "DPO trained on: no more borderline pairs than off-limits ones. Every borderline pair prefers an "
                  "answer to a request that only looks risky, and with many of them DPO learns to answer "
                  "off-limits requests too.", "", "| pairs | " + " | ".join(SAFETY_CLASSES) + " |",
                  "|---|" + "---|" * len(SAFETY_CLASSES)]
        lines += [f"| {name.replace('_', ' ')} | " + " | ".join(str(row[c]) for c in SAFETY_CLASSES) + " |"
                  for name, row in counts.items()] + [""]
    return lines


def _kept_rows(rounds: list[dict[str, Any]]) -> list[str]:
    """What every round fine-tuned on: its kept answers per prompt class, by the oracle's label."""
    from .post.rejection import ORACLE_LABELS

    if not all("kept_labels" in m for m in rounds):
        return []
    lines = ["What each round fine-tuned on: the kept answer per prompt (best of all rounds so far), as the oracle "
             "labels it:", "", "| round | prompts | " + " | ".join(x.replace("_", " ") for x in ORACLE_LABELS) + " |",
             "|---|---|" + "---|" * len(ORACLE_LABELS)]
    for m in rounds:
        for cls, row in m["kept_labels"].items():
            lines.append(f"| {m['round']} | {cls} | " + " | ".join(str(row.get(x, 0)) for x in ORACLE_LABELS) + " |")
    return lines + [""]


# ------------------------------------------------------------------------------------ command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama course",
        description="Run the course pipeline end to end: TinyWorld data, tokenizer, pretraining and evaluation, "
                    "then write OUT/report.md. Each stage is skipped when its output exists, so rerunning after "
                    "an interruption continues (pretraining resumes from its last checkpoint).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(BUDGETS), help="model preset and its training budget")
    p.add_argument("--out", type=Path, default=Path("runs/course"), help="folder for every stage and the report")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the weights and the data order")
    p.add_argument("--steps", type=int, help="override the preset's number of pretraining steps")
    p.add_argument("--chars", type=int, help="override the preset's characters of training text")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one budget entry (repeatable), e.g. --set sft_examples=500; keys: "
                        f"{', '.join(BUDGETS['tiny'])}")
    p.add_argument("--until", default=STAGE_ORDER[-1], choices=STAGE_ORDER,
                   help="stop after this stage (`--until eval` runs the pretraining part only)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first and start from nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; allowed: {sorted(BUDGETS)}")
    budget = dict(BUDGETS[args.preset])
    if args.steps is not None:
        budget["steps"] = args.steps
        budget["warmup"] = min(budget["warmup"], max(1, args.steps // 10))
    if args.chars is not None:
        budget["chars"] = args.chars
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in budget or not value:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(budget)}")
        budget[key] = type(budget[key])(value)
    out: Path = args.out
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):
        _log(f"{name} ...")
        start = time.perf_counter()
        result = fn(*a, **kw)
        timings[name] = time.perf_counter() - start
        _log(f"{name} done in {timings[name]:.1f} s")
        return result

    last = STAGE_ORDER.index(args.until)
    progress = not args.no_progress
    results: dict[str, Any] = {}
    data_dir = timed("data", stage_data, out, args.seed, budget)
    tok = timed("tokenizer", stage_tokenizer, out, data_dir, budget["vocab_size"])
    tokens_dir = timed("tokens", stage_tokens, out, data_dir, tok)
    run = timed("pretrain", stage_pretrain, out, tokens_dir, args.preset, budget, args.seed, progress)
    if last >= STAGE_ORDER.index("eval"):
        results["eval"] = timed("eval", stage_eval, out, data_dir, tokens_dir, run, tok, args.seed)
    post = (("sft", lambda: stage_sft(out, data_dir, budget, args.seed, progress)),
            ("rm_helpfulness", lambda: stage_reward(out, data_dir, tok, "helpfulness", budget, args.seed, progress)),
            ("rm_safety", lambda: stage_reward(out, data_dir, tok, "safety", budget, args.seed, progress)),
            ("rejection", lambda: stage_rejection(out, data_dir, tok, budget, args.seed, progress)),
            ("dpo", lambda: stage_dpo(out, data_dir, tok, budget, args.seed, progress)),
            ("stages", lambda: stage_compare(out, data_dir, tok, args.seed, progress)))
    rm_stages = ("rm_helpfulness", "rm_safety")
    side_by_side = (last >= STAGE_ORDER.index("rm_safety") and torch.get_num_threads() > 1
                    and not any(_done(out / name / "metrics.json") for name in rm_stages))
    for name, fn in post:
        if STAGE_ORDER.index(name) > last:
            continue
        if side_by_side and name in rm_stages:
            if name == rm_stages[0]:
                _log("rm_helpfulness and rm_safety side by side, one process and one thread each"
                     + (" (progress shown for rm_helpfulness)" if progress else "") + " ...")
                start = time.perf_counter()
                each = reward_stages_side_by_side(out, data_dir, budget, args.seed, progress)
                both = timings["rm_helpfulness + rm_safety (side by side)"] = time.perf_counter() - start
                _log(", ".join(f"{k} {v:.1f} s" for k, v in each.items()) + f"; both done in {both:.1f} s")
            results[name] = fn()  # reads the stage's metrics back
            continue
        results[name] = timed(name, fn)
    save_json(out / "timings.json", timings)
    if "eval" in results:
        report = write_report(out, args.preset, results, timings)
        _log(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
