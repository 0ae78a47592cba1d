"""``minillama course``: the end-to-end course pipeline, stage by stage, and its report.

    minillama course --preset tiny --out runs/course      (``make course`` runs exactly this)

Stages, each in its own folder under ``--out`` and skipped when its result is already there (so
an interrupted run continues where it stopped; the training stages resume from their last
checkpoint). Each calls one typed ``run_<stage>`` of :mod:`minillama.stages` (or of the data and
evaluation floors) with the preset's budget (:mod:`minillama.course.budgets`):

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

then ``report.md`` with the figures and plots (:mod:`minillama.course.report`). ``--until
pretrain`` stops after the language-model part.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_model
from ..config import PRESETS, LlamaConfig
from ..data import Oracle
from ..data.annotators import AnnotatorPool
from ..data.files import load_tasks, write_dataset
from ..evaluate.oracle import ANSWER_QUALITIES, evaluate_model, paired_difference, summary, win_rate
from ..evaluate.probes import cloze_accuracy, continuations, copying_probe, unigram_cross_entropy
from ..fileio import read_json, read_jsonl, save_json
from ..model import Llama
from ..precision import describe as describe_precision
from ..speed import Speed, add_speed_arguments, speed_from_args
from ..stages.dpo import run_dpo
from ..stages.pretrain import run_pretrain
from ..stages.rejection import run_rejection
from ..stages.reward import run_reward
from ..stages.sft import run_sft
from ..tokenizer import Tokenizer
from ..train import DistEnv, TrainConfig, open_split
from ..train.data import read_meta, tokenize_corpus
from .budgets import BUDGETS
from .report import write_report

STAGE_ORDER = ("data", "tokenizer", "tokens", "pretrain", "eval", "sft", "rm_helpfulness", "rm_safety",
               "rejection", "dpo", "stages")
STAGE_MODELS = {"pretrained": "pretrain/model", "sft": "sft/model", "rs_round_1": "rejection/round_1/model",
                "rs_round_2": "rejection/round_2/model", "dpo": "dpo/model", "dpo_rm_pairs": "dpo_rm_pairs/model"}
# The metric each stage is meant to improve, and the stage it is compared with.
STAGE_TARGETS = {"sft": ("pretrained", "helpful_accuracy"), "rs_round_1": ("sft", "combined"),
                 "rs_round_2": ("rs_round_1", "combined"), "dpo": ("sft", "combined"),
                 "dpo_rm_pairs": ("sft", "combined")}


def _log(message: str) -> None:
    print(f"[course] {message}", flush=True)


# ------------------------------------------------------------------------------------ stages
def stage_data(out: Path, budget: dict[str, Any], seed: int) -> Path:
    directory = out / "data"
    if not (directory / "manifest.json").is_file():
        write_dataset(directory, seed, chars=budget["chars"], eval_chat=budget["eval_chat"],
                      eval_safety=budget["eval_safety"], progress=False)
    return directory


def stage_tokenizer(out: Path, data_dir: Path, budget: dict[str, Any]) -> Tokenizer:
    path = out / "tokenizer" / "tokenizer.model"
    if not path.is_file():
        Tokenizer.train(data_dir / "train.txt", vocab_size=budget["vocab_size"]).save(path)
    return Tokenizer.load(path)


def stage_tokens(out: Path, data_dir: Path, tok: Tokenizer) -> Path:
    directory = out / "tokens"
    if not (directory / "meta.json").is_file():
        tokenize_corpus(data_dir, tok, directory, {"tokenizer": str(out / "tokenizer" / "tokenizer.model")})
    return directory


def stage_pretrain(out: Path, tokens_dir: Path, preset: str, budget: dict[str, Any], seed: int,
                   progress: bool, speed: Speed = Speed()) -> Path:
    run = out / "pretrain"
    if not (run / "model" / "model.safetensors").is_file():
        config = LlamaConfig.from_preset(preset, vocab_size=read_meta(tokens_dir)["vocab_size"],
                                         max_seq_len=max(PRESETS[preset]["max_seq_len"], budget["seq_len"]))
        every = max(1, budget["steps"] // 8)
        train = TrainConfig(steps=budget["steps"], lr=budget["lr"], warmup_steps=budget["warmup"], eval_interval=every,
                            checkpoint_interval=every, seed=seed, progress=progress, **speed.training())
        run_pretrain(tokens_dir, run, config, train, budget["batch_size"], budget["seq_len"])
    return run


def stage_eval(out: Path, data_dir: Path, tokens_dir: Path, run: Path, tok: Tokenizer, seed: int) -> dict[str, Any]:
    """The pretrained model against the unigram baseline, its fact cloze, the copying probe, samples."""
    path = out / "eval" / "metrics.json"
    if path.is_file():
        return read_json(path)
    model = load_model(run / "model", torch.float32, Llama).eval()
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
        "samples": continuations(model, tok, seed=seed),
    }
    save_json(path, metrics)
    return metrics


def stage_sft(out: Path, data_dir: Path, tok: Tokenizer, budget: dict[str, Any], seed: int,
              progress: bool, speed: Speed = Speed()) -> dict[str, Any]:
    run = out / "sft"
    if not (run / "sft_metrics.json").is_file():
        run_sft(out / "pretrain" / "model", tok, data_dir, run, epochs=2, batch_size=budget["batch_size"],
                lr=budget["sft_lr"], weight_decay=0.1, seed=seed, max_examples=budget["sft_examples"],
                uneven_demos=budget["sft_uneven"],
                eval_before=False, eval_prompts=0, eval_safety=0, progress=progress, speed=speed)
    return read_json(run / "sft_metrics.json")


def stage_reward(out: Path, data_dir: Path, tok: Tokenizer, kind: str, budget: dict[str, Any], seed: int,
                 progress: bool, speed: Speed = Speed()) -> dict[str, Any]:
    """A reward model trained with Llama 2's margin and one without, on the same pairs of the SFT
    model's samples (plus references and distractors) labelled by the oracle."""
    run = out / f"rm_{kind}"
    if not (run / "metrics.json").is_file():
        run_reward(out / "sft" / "model", tok, data_dir, run, kind, prompts=budget["rm_prompts"],
                   samples=budget["rm_samples"], margins="small", without_margin=True, lr=budget["rm_lr"], seed=seed,
                   progress=progress, speed=speed)
    return read_json(run / "metrics.json")


def _reward_stage_alone(out: Path, data_dir: Path, kind: str, budget: dict[str, Any], seed: int,
                        progress: bool, speed: Speed) -> float:
    """One reward-model stage in a process of its own, on one thread; returns its seconds."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    stage_reward(out, data_dir, Tokenizer.load(out / "tokenizer" / "tokenizer.model"), kind, budget, seed, progress,
                 speed)
    return time.perf_counter() - start


def reward_stages_side_by_side(out: Path, data_dir: Path, budget: dict[str, Any], seed: int,
                               progress: bool = False, speed: Speed = Speed()) -> dict[str, float]:
    """Both reward-model stages at once, each in its own process on one thread. They depend on the
    SFT model alone, and the tiny model's small matrices keep a second thread of one process half
    idle: on a 2-core CPU two one-thread processes finish both stages in about 80% of the time the
    two stages take one after the other. With ``progress`` the helpfulness stage shows its bars
    (two processes' bars would overwrite each other). Returns each stage's seconds."""
    import multiprocessing

    kinds = ("helpfulness", "safety")
    jobs = [(out, data_dir, kind, budget, seed, progress and kind == kinds[0], speed) for kind in kinds]
    with multiprocessing.get_context("spawn").Pool(len(kinds)) as pool:
        seconds = pool.starmap(_reward_stage_alone, jobs)
    return {f"rm_{kind}": s for kind, s in zip(kinds, seconds)}


def stage_rejection(out: Path, data_dir: Path, tok: Tokenizer, budget: dict[str, Any], seed: int,
                    progress: bool, speed: Speed = Speed()) -> dict[str, Any]:
    """Two rounds of rejection sampling, then the reward-vs-K study on held-out prompts."""
    run = out / "rejection"
    if not ((run / "metrics.json").is_file() and (run / "reward_vs_k.json").is_file()):
        run_rejection(out / "sft", (out / "rm_helpfulness" / "margin", out / "rm_safety" / "margin"), tok, data_dir,
                      run, rounds=2, k=budget["rs_k"], temperature=budget["rs_temperature"],
                      n_prompts=budget["rs_prompts"], epochs=1, lr=budget["rs_lr"], batch_size=budget["batch_size"],
                      eval_prompts=100, eval_safety=50, seed=seed, progress=progress,
                      study_prompts=budget["study_prompts"], threshold_prompts=budget["rs_threshold_prompts"],
                      speed=speed)
    return {"rounds": read_json(run / "metrics.json"), "reward_vs_k": read_json(run / "reward_vs_k.json")}


def stage_dpo(out: Path, data_dir: Path, tok: Tokenizer, budget: dict[str, Any], seed: int,
              progress: bool, speed: Speed = Speed()) -> dict[str, Any]:
    """DPO from the SFT model, NLL-regularised, on pairs of its own samples for the rejection-sampling
    prompts (round 1's samples, ranked by the oracle: the same prompts, samples and judge as
    rejection sampling); and a second time on as many of the pairs the reward models learned from
    (``dpo_rm_pairs/``). The reward models' clear held-out pairs check its implicit reward."""
    run = out / "dpo"
    rm_run = out / "dpo_rm_pairs"
    n_pairs = budget["rs_prompts"] * budget["dpo_pairs_per_prompt"]
    if not (rm_run / "metrics.json").is_file():
        run_dpo(out / "sft" / "model", tok, rm_run, pairs=[out / f"rm_{kind}" / "pairs_train.jsonl"
                                                            for kind in ("helpfulness", "safety")],
                val_pairs=[out / f"rm_{kind}" / "pairs_val.jsonl" for kind in ("helpfulness", "safety")],
                max_pairs=n_pairs, max_val_pairs=500, beta=budget["dpo_beta"], nll_alpha=budget["dpo_nll_alpha"],
                lr=budget["dpo_lr"], batch_size=budget["batch_size"], seed=seed, progress=progress, speed=speed)
    if not (run / "metrics.json").is_file():
        run_dpo(out / "sft" / "model", tok, run, samples=out / "rejection" / "round_1" / "samples.jsonl",
                data_dir=data_dir,
                val_pairs=[out / f"rm_{kind}" / "pairs_val.jsonl" for kind in ("helpfulness", "safety")],
                pairs_per_prompt=budget["dpo_pairs_per_prompt"], max_val_pairs=500, beta=budget["dpo_beta"],
                nll_alpha=budget["dpo_nll_alpha"], lr=budget["dpo_lr"], batch_size=budget["batch_size"], seed=seed,
                progress=progress, speed=speed)
    return {**read_json(run / "metrics.json"), "rm_pairs": read_json(rm_run / "metrics.json")}


def stage_compare(out: Path, data_dir: Path, tok: Tokenizer, seed: int, progress: bool,
                  speed: Speed = Speed(), uneven_demos: float = 0.3) -> dict[str, Any]:
    """Every stage's greedy answers to the same held-out test prompts, scored by the oracle; the
    paired bootstrap change of each stage's target metric over the stage it builds on (and of
    content accuracy, form adherence and cleanness apart, so a gain in one never passes as
    another); and each stage's win rate over the annotators' demonstrations for the same prompts."""
    run = out / "stages"
    tasks = load_tasks(data_dir, "chat_test", "safety_test")
    oracle = Oracle(tasks)
    results = {}
    for name, rel in STAGE_MODELS.items():
        path = run / f"{name}.json"
        if not path.is_file():
            model = load_model(out / rel, torch.float32, Llama).eval()
            save_json(path, summary(evaluate_model(model, tok, oracle, tasks, seed=seed, progress=progress,
                                                   speed=speed)))
        results[name] = read_json(path)
    def change(base: str, name: str, metric: str) -> dict[str, float]:
        a, b = (np.array(results[stage]["per_prompt"][metric], dtype=float) for stage in (base, name))
        return dict(zip(("mean", "lo", "hi"), paired_difference(a, b, seed=seed)))

    changes = {}
    for name, (base, metric) in STAGE_TARGETS.items():
        target = change(base, name, metric)
        changes[name] = {"vs": base, "metric": metric, **target, "improves": bool(target["lo"] > 0),
                         "by_quality": {quality: change(base, name, quality) for quality in ANSWER_QUALITIES}}
    save_json(run / "changes.json", changes)
    demos = [d.text for d in AnnotatorPool(uneven_demos, seed).demonstrations(tasks)]
    vs_demos = {name: win_rate(oracle, tasks, r["per_prompt"]["response"], demos, seed=seed)
                for name, r in results.items()}
    save_json(run / "vs_demonstrations.json", vs_demos)
    return {"results": results, "changes": changes, "vs_demonstrations": vs_demos}


# ------------------------------------------------------------------------------------ command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama course",
        description="Run the course pipeline end to end: TinyWorld data, tokenizer, pretraining and its evaluation, "
                    "SFT, reward models, rejection sampling, DPO and the stage-by-stage comparison, then write "
                    "OUT/report.md. Each stage is skipped when its output exists, so rerunning after an "
                    "interruption continues (the training stages resume from their last checkpoint).",
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
    add_speed_arguments(p)
    return p


def budget_for(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's budget with the command line's overrides."""
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
    return budget


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    budget = budget_for(args)
    out: Path = args.out
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any], *a: Any) -> Any:
        _log(f"{name} ...")
        start = time.perf_counter()
        result = fn(*a)
        timings[name] = time.perf_counter() - start
        _log(f"{name} done in {timings[name]:.1f} s")
        return result

    last = STAGE_ORDER.index(args.until)
    seed, progress, speed = args.seed, not args.no_progress, speed_from_args(args)
    speed_line = (f"Precision {describe_precision(speed.precision, DistEnv.current().device('auto'))}; "
                  f"torch.compile: training steps {'on' if speed.compile_training else 'off'}, decoding step "
                  f"{'on' if speed.compile_decoding else 'off'}.")
    _log(speed_line)
    results: dict[str, Any] = {}
    data_dir = timed("data", stage_data, out, budget, seed)
    tok = timed("tokenizer", stage_tokenizer, out, data_dir, budget)
    tokens_dir = timed("tokens", stage_tokens, out, data_dir, tok)
    run = timed("pretrain", stage_pretrain, out, tokens_dir, args.preset, budget, seed, progress, speed)
    if last >= STAGE_ORDER.index("eval"):
        results["eval"] = timed("eval", stage_eval, out, data_dir, tokens_dir, run, tok, seed)
    post = {"sft": lambda: stage_sft(out, data_dir, tok, budget, seed, progress, speed),
            "rm_helpfulness": lambda: stage_reward(out, data_dir, tok, "helpfulness", budget, seed, progress, speed),
            "rm_safety": lambda: stage_reward(out, data_dir, tok, "safety", budget, seed, progress, speed),
            "rejection": lambda: stage_rejection(out, data_dir, tok, budget, seed, progress, speed),
            "dpo": lambda: stage_dpo(out, data_dir, tok, budget, seed, progress, speed),
            "stages": lambda: stage_compare(out, data_dir, tok, seed, progress, speed, budget["sft_uneven"])}
    rm_stages = ("rm_helpfulness", "rm_safety")
    side_by_side = (last >= STAGE_ORDER.index("rm_safety") and torch.get_num_threads() > 1
                    and not any((out / name / "metrics.json").is_file() for name in rm_stages))
    for name, fn in post.items():
        if STAGE_ORDER.index(name) > last:
            continue
        if side_by_side and name == rm_stages[0]:
            _log("rm_helpfulness and rm_safety side by side, one process and one thread each"
                 + (" (progress shown for rm_helpfulness)" if progress else "") + " ...")
            start = time.perf_counter()
            each = reward_stages_side_by_side(out, data_dir, budget, seed, progress, speed)
            both = timings["rm_helpfulness + rm_safety (side by side)"] = time.perf_counter() - start
            _log(", ".join(f"{k} {v:.1f} s" for k, v in each.items()) + f"; both done in {both:.1f} s")
        results[name] = fn() if side_by_side and name in rm_stages else timed(name, fn)  # done: reads its metrics
    save_json(out / "timings.json", timings)
    if "eval" in results:
        _log(f"report written to {write_report(out, args.preset, results, timings, speed_line)}")
    return 0
