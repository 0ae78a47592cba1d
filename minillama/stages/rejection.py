"""Rejection sampling fine-tuning, Llama 2's fourth stage: sample K answers per prompt, keep the one
the reward models like best, fine-tune the policy on the kept answers, repeat.

One round:

1. ``K`` samples per prompt from the current policy at a temperature (batched on the KV cache,
   :func:`~minillama.chat.sample_responses`);
2. each scored by the two reward models combined by Llama 2's rule
   (:meth:`~minillama.evaluate.rewards.RewardScorer.combined`: the safety score where the prompt is
   risky or the answer looks unsafe, the helpfulness score elsewhere);
3. the best of the ``K`` kept (:func:`best_of_k`), and, beyond Llama 2, only when its reward
   clears a threshold chosen on validation samples (:func:`choose_threshold`): best-of-K keeps
   one answer per prompt even when all K are bad, and the threshold drops those prompts. As
   Llama 2 did after finding that training on the last round's samples alone lost ground, each
   prompt keeps the best answer of *all* rounds so far;
4. the policy fine-tuned on the kept ``(prompt, answer)`` chats with the SFT loss and packing.

Why it works, and where it stops working, shows in :func:`reward_vs_k`: the best of K samples
gets better with K while the median does not, so the gap between them is what fine-tuning on the
best can gain; and since the oracle also scores every sample, :func:`pick_quality` shows how far
the reward models' pick falls behind the oracle's own best pick (reward-model error, and the
over-optimisation that grows with K).
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from ..chat import chat_example, sample_responses
from ..checkpoint import load_model, resolve_model_dir, save_model
from ..data import Oracle, Task
from ..data.files import load_tasks, read_samples, subset, val_tasks
from ..data.oracle import HELPFULNESS_LABELS, SAFETY_LABELS
from ..evaluate.oracle import evaluate_model, summary
from ..evaluate.rewards import OracleJudge, RewardScorer, is_risky_prompt
from ..fileio import atomic_write, read_json, read_jsonl, save_json, write_jsonl
from ..model import Llama
from ..speed import Speed, add_speed_arguments, speed_from_args
from ..sequences import lm_loss
from ..tokenizer import Tokenizer
from ..train import DistEnv, TrainConfig, Trainer
from ..train.packing import PackedSFTBatches

KS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)


class Kept(NamedTuple):
    """The answer rejection sampling keeps for a prompt, and its combined reward."""

    prompt: str
    response: str
    score: float


# ---------------------------------------------------------------------------------- selection
def best_of_k(scores: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Index of the best of each row's ``K`` samples: ``(n, K) -> (n,)`` (the first one on a tie)."""
    scores = torch.as_tensor(scores)
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be (prompts, samples) with at least one sample, got {tuple(scores.shape)}")
    return scores.argmax(-1)


def sample_and_score(policy: Llama, tokenizer: Tokenizer, scorer: RewardScorer | OracleJudge, tasks: Sequence[Task],
                     k: int = 8, temperature: float = 1.0, seed: int = 0, max_new_tokens: int = 64,
                     batch_size: int = 64, progress: bool = False,
                     speed: Speed = Speed()) -> tuple[list[list[str]], torch.Tensor]:
    """``k`` samples per task and their combined rewards ``(n, k)``."""
    prompts = [t.prompt for t in tasks]
    samples = sample_responses(policy, tokenizer, prompts, n_samples=k, temperature=temperature,
                               max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress,
                               **speed.sampling())
    flat_prompts = [p for p in prompts for _ in range(k)]
    flat_risky = [is_risky_prompt(t) for t in tasks for _ in range(k)]
    scores = scorer.combined(flat_prompts, [s for row in samples for s in row], flat_risky)
    return samples, scores.view(len(tasks), k)


def select_best(tasks: Sequence[Task], samples: Sequence[Sequence[str]], scores: torch.Tensor) -> list[Kept]:
    best = best_of_k(scores)
    return [Kept(t.prompt, row[int(j)], float(scores[i, j])) for i, (t, row, j) in enumerate(zip(tasks, samples, best))]


# An answer the oracle scores this high has the right content (or is a proper refusal): what the
# threshold tries to keep.
GOOD = 0.7


def choose_threshold(rewards: np.ndarray | torch.Tensor, truth: np.ndarray, good: float = GOOD) -> dict[str, float]:
    """The reward level that best tells good samples (oracle score ``>= good``) from the rest, by
    balanced accuracy of ``reward >= level``, with what keeping only those above it gives on the
    same samples: ``purity`` (share good), ``coverage`` (share of the good ones kept) and the
    share of samples kept. ``rewards`` and ``truth`` flat or ``(n, K)``, the same shape."""
    rewards, truth = np.asarray(rewards, np.float64).ravel(), np.asarray(truth, np.float64).ravel()
    if rewards.shape != truth.shape or not len(rewards):
        raise ValueError(f"rewards and truth must be non-empty and of one shape, got {rewards.shape}, {truth.shape}")
    is_good = truth >= good
    if is_good.all() or not is_good.any():  # nothing to separate: keep everything
        level = float(rewards.min())
    else:
        levels = np.unique(rewards)
        above = rewards[None, :] >= levels[:, None]
        balanced = (above[:, is_good].mean(1) + (~above[:, ~is_good]).mean(1)) / 2
        level = float(levels[int(balanced.argmax())])
    kept = rewards >= level
    return {"threshold": level, "good": good, "purity": float(is_good[kept].mean()),
            "coverage": float(kept[is_good].mean()) if is_good.any() else 1.0, "kept_share": float(kept.mean()),
            "good_share": float(is_good.mean()), "samples": int(len(rewards))}


def merge_best(previous: dict[str, Kept], new: Sequence[Kept]) -> dict[str, Kept]:
    """Per prompt, the higher-scoring of the answer kept so far and the new one."""
    merged = dict(previous)
    for kept in new:
        if kept.prompt not in merged or kept.score > merged[kept.prompt].score:
            merged[kept.prompt] = kept
    return merged


def finetune_on_samples(policy: Llama, tokenizer: Tokenizer, kept: Sequence[Kept], out_dir: str | Path,
                        epochs: int = 1, lr: float = 1e-4, batch_size: int = 16, seq_len: int | None = None,
                        seed: int = 0, device: str = "auto", progress: bool = True, speed: Speed = Speed()) -> Llama:
    """Fine-tune ``policy`` on the kept chats with the SFT loss (answer tokens only, packed rows),
    through the shared trainer writing into ``out_dir`` (rerunning resumes)."""
    if not kept:
        raise ValueError("kept must not be empty")
    seq_len = seq_len or policy.config.max_seq_len
    examples = [chat_example(tokenizer, k.prompt, k.response, max_len=seq_len + 1) for k in kept]
    batches = PackedSFTBatches(examples, batch_size, seq_len, seed, pad_id=tokenizer.pad_id)
    steps = epochs * batches.steps_per_epoch
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=min(steps, max(1, steps // 30)), eval_interval=0,
                         checkpoint_interval=max(1, steps // 4), seed=seed, device=device, progress=progress,
                         **speed.training())
    Trainer(policy, lm_loss, batches, config, out_dir).fit()
    return policy.eval()


# What :func:`oracle_label` can return, best first within each axis.
ORACLE_LABELS: tuple[str, ...] = (*HELPFULNESS_LABELS, *(label for label in SAFETY_LABELS if label != "safe"))


def oracle_label(oracle: Oracle, task: Task, response: str) -> str:
    """What the oracle calls ``response``: its safety label where the prompt is off-limits or the
    answer declines (``proper_refusal``, ``unsafe_compliance``, ``false_refusal``), its helpfulness
    label elsewhere (``correct``, ``partial``, ``wrong``, ``malformed``)."""
    safety = oracle.safety(task, response).label
    return safety if task.risky or safety == "false_refusal" else oracle.helpfulness(task, response).label


def kept_labels(oracle: Oracle, tasks: Sequence[Task], kept: Sequence[Kept]) -> dict[str, dict[str, int]]:
    """How many kept answers the oracle gives each label (:func:`oracle_label`), per prompt class
    (``Task.safety``: benign, borderline, unsafe): what the fine-tuning of a round is about to learn."""
    by_prompt = {t.prompt: t for t in tasks}
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for k in kept:
        task = by_prompt[k.prompt]
        counts[task.safety][oracle_label(oracle, task, k.response)] += 1
    return {cls: dict(sorted(row.items())) for cls, row in sorted(counts.items())}


# ---------------------------------------------------------------------------------- analysis
def _check_ks(n_samples: int, ks: Sequence[int]) -> list[int]:
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be >= 1, got {list(ks)}")
    kept = [k for k in ks if k <= n_samples]
    if not kept:
        raise ValueError(f"every k in {list(ks)} exceeds the {n_samples} samples per prompt")
    return kept


def reward_vs_k(scores: torch.Tensor | np.ndarray, ks: Sequence[int] = KS) -> dict[str, list[float]]:
    """Max and median reward among the first ``K`` samples of each prompt, averaged over prompts,
    for each ``K`` in ``ks`` (those above the number of samples are left out). ``scores (n, Kmax)``.

    The samples are nested (the first 4 contain the first 2), so the max never decreases with K."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (prompts, samples), got shape {scores.shape}")
    ks = _check_ks(scores.shape[1], ks)
    return {"k": ks, "max": [float(scores[:, :k].max(1).mean()) for k in ks],
            "median": [float(np.median(scores[:, :k], axis=1).mean()) for k in ks]}


def pick_quality(rm_scores: torch.Tensor | np.ndarray, oracle_scores: torch.Tensor | np.ndarray,
                 ks: Sequence[int] = KS) -> dict[str, list[float]]:
    """For each ``K``: the oracle's mean score of the reward models' pick among the first ``K``
    samples, of the oracle's own best pick, and of a random sample (the mean). Both ``(n, Kmax)``."""
    rm_scores, oracle_scores = np.asarray(rm_scores, np.float64), np.asarray(oracle_scores, np.float64)
    if rm_scores.shape != oracle_scores.shape or rm_scores.ndim != 2:
        raise ValueError(f"rm_scores and oracle_scores must both be (prompts, samples), got {rm_scores.shape} "
                         f"and {oracle_scores.shape}")
    ks = _check_ks(rm_scores.shape[1], ks)
    rows = np.arange(len(rm_scores))
    return {"k": ks,
            "oracle_of_rm_pick": [float(oracle_scores[rows, rm_scores[:, :k].argmax(1)].mean()) for k in ks],
            "oracle_best": [float(oracle_scores[:, :k].max(1).mean()) for k in ks],
            "oracle_mean": [float(oracle_scores[:, :k].mean()) for k in ks]}


def oracle_scores(oracle: Oracle, tasks: Sequence[Task], samples: Sequence[Sequence[str]]) -> np.ndarray:
    """The oracle's combined score of every sample, ``(n, K)``."""
    return np.array([[oracle.combined(t, s).score for s in row] for t, row in zip(tasks, samples)])


def reward_vs_k_study(policy: Llama, tokenizer: Tokenizer, scorer: RewardScorer | OracleJudge,
                      oracle: Oracle, tasks: Sequence[Task], temperatures: Sequence[float] = (0.6, 0.8, 1.0, 1.2),
                      k_max: int = 32, ks: Sequence[int] = KS, seed: int = 0, max_new_tokens: int = 64,
                      batch_size: int = 64, progress: bool = False, speed: Speed = Speed()) -> dict[str, Any]:
    """:func:`reward_vs_k` and :func:`pick_quality` of ``k_max`` samples per task at each temperature."""
    ks = _check_ks(k_max, ks)
    curves = {}
    for temperature in temperatures:
        samples, rm = sample_and_score(policy, tokenizer, scorer, tasks, k_max, temperature, seed, max_new_tokens,
                                       batch_size, progress, speed)
        curves[f"{temperature:g}"] = {**reward_vs_k(rm, ks), **pick_quality(rm, oracle_scores(oracle, tasks, samples),
                                                                             ks)}
    return {"prompts": len(tasks), "k_max": k_max, "seed": seed, "temperatures": curves}


def plot_reward_vs_k(study: dict[str, Any], path: str | Path) -> Figure:
    """Left: max (solid) and median (dashed) combined reward vs K, one colour per temperature.
    Right: the oracle's score of the reward models' pick (solid) and of its own best (dotted).
    Written to ``path`` (png) atomically."""
    fig = Figure(figsize=(11, 4), dpi=100)
    left, right = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(len(study["temperatures"]))]
    for color, (temperature, c) in zip(colors, study["temperatures"].items()):
        left.plot(c["k"], c["max"], "o-", color=color, label=f"T={temperature} max")
        left.plot(c["k"], c["median"], "s--", color=color, label=f"T={temperature} median", alpha=0.7)
        right.plot(c["k"], c["oracle_of_rm_pick"], "o-", color=color, label=f"T={temperature} reward models' pick")
        right.plot(c["k"], c["oracle_best"], ":", color=color, label=f"T={temperature} oracle's best")
    for ax, ylabel, title in ((left, "combined reward (reward models)", "reward of the best and median of K"),
                              (right, "oracle's combined score", "what the pick is really worth")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (samples per prompt)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    return fig


# ---------------------------------------------------------------------------------- the stage
def _save_samples(path: Path, tasks: Sequence[Task], samples: Sequence[Sequence[str]], rm: torch.Tensor,
                  oracle: np.ndarray) -> None:
    write_jsonl(path, ({"prompt": t.prompt, "samples": list(s), "reward": rm[i].tolist(), "oracle": oracle[i].tolist()}
                       for i, (t, s) in enumerate(zip(tasks, samples))))


def _load_samples(path: Path) -> tuple[list[list[str]], torch.Tensor, np.ndarray]:
    rows = read_samples(path)
    return ([r["samples"] for r in rows], torch.tensor([r["reward"] for r in rows]),
            np.array([r["oracle"] for r in rows]))


def rejection_prompts(data_dir: str | Path, n: int, safety_share: float = 1 / 3, seed: int = 0) -> list[Task]:
    """``n`` training prompts for rejection sampling: ``round(n * safety_share)`` drawn from the
    safety tasks (off-limits, borderline and harmless requests), the rest from the chat tasks.

    The share is set, not left to the files' sizes: the training split holds ten chat tasks per
    safety task, so a plain random draw would give the safety reward model almost nothing to
    decide, while the evaluation mix (1,000 chat + 500 safety prompts) is a third safety."""
    if not 0.0 <= safety_share <= 1.0:
        raise ValueError(f"safety_share must be in [0, 1], got {safety_share}")
    n_safety = round(n * safety_share)
    return (subset(load_tasks(data_dir, "chat_train"), n - n_safety, seed, stream=13)
            + subset(load_tasks(data_dir, "safety_train"), n_safety, seed, stream=13))


def run_rejection(sft_dir: str | Path, rm_dirs: tuple[str | Path, str | Path] | None, tokenizer: Tokenizer,
                  data_dir: str | Path, out_dir: str | Path, rounds: int = 2, k: int = 8, temperature: float = 1.0,
                  n_prompts: int = 1000, epochs: int = 1, lr: float = 1e-4, batch_size: int = 16,
                  max_new_tokens: int = 64, eval_prompts: int = 200, eval_safety: int = 100, seed: int = 0,
                  device: str = "auto", progress: bool = True, safety_share: float = 1 / 3,
                  study_prompts: int = 0, study_temperatures: Sequence[float] = (0.6, 1.0, 1.4),
                  study_k: int = 32, threshold_prompts: int = 0, speed: Speed = Speed()) -> dict[str, Any]:
    """``rounds`` rounds of rejection sampling from the SFT model in ``sft_dir``, scored by the
    reward models in ``rm_dirs`` (helpfulness, safety; ``None``: by the oracle itself, the
    :class:`~minillama.evaluate.rewards.OracleJudge` ceiling), on ``n_prompts`` training prompts of
    ``data_dir``, ``safety_share`` of them safety tasks (:func:`rejection_prompts`; the same
    prompts every round). Then, with ``study_prompts > 0``, the reward-vs-K study of the SFT model
    (:func:`reward_vs_k_study`: ``study_k`` samples at each of ``study_temperatures``) on
    ``study_prompts`` chat and half as many safety validation prompts, by the reward models.
    With ``threshold_prompts > 0``, ``k`` SFT samples for that many chat and half as many safety
    validation prompts choose the reward threshold a kept answer must clear
    (:func:`choose_threshold`, saved in ``out_dir/threshold.json``); 0 keeps every best-of-K.

    Round ``r`` writes ``out_dir/round_r/``: ``samples.jsonl`` (every sample, its reward and its
    oracle score), ``kept.jsonl`` (the best answer per prompt over rounds 1..r), ``train/`` (the
    trainer's run), ``model/`` and, last, ``metrics.json``. A round with ``metrics.json`` is done
    and skipped on a rerun; an unfinished one reuses its samples and resumes its training. Returns
    (and writes to ``out_dir/metrics.json``) the oracle's scores of the SFT model and of every round,
    and the study (also in ``out_dir/reward_vs_k.json`` and ``.png``)."""
    if rounds < 0 or k < 1:
        raise ValueError(f"rounds must be >= 0 and k >= 1, got {rounds} and {k}")
    if rm_dirs is None and study_prompts:
        raise ValueError("the reward-vs-K study reads the reward models: give rm_dirs, or study_prompts=0")
    out_dir, device_ = Path(out_dir), DistEnv().device(device)
    tasks = rejection_prompts(data_dir, n_prompts, safety_share, seed)
    eval_tasks = val_tasks(data_dir, eval_prompts, eval_safety)
    oracle = Oracle([*tasks, *eval_tasks])
    scorer = OracleJudge(oracle) if rm_dirs is None else RewardScorer.load(*rm_dirs, tokenizer, device_)
    policy_dir = sft_dir = resolve_model_dir(sft_dir)

    def evaluate(model: Llama) -> dict[str, Any]:
        result = evaluate_model(model, tokenizer, oracle, eval_tasks, max_new_tokens, seed=seed, progress=progress,
                                speed=speed)
        return summary(result, per_prompt=False)

    sft_eval_path = out_dir / "sft_eval.json"
    if rounds and not sft_eval_path.is_file():
        save_json(sft_eval_path, evaluate(load_model(policy_dir, torch.float32, Llama).to(device_)))
    report: dict[str, Any] = {"sft": read_json(sft_eval_path) if rounds else None, "rounds": []}
    threshold_path, threshold = out_dir / "threshold.json", None
    if rounds and threshold_prompts and not threshold_path.is_file():
        val = val_tasks(data_dir, threshold_prompts, threshold_prompts // 2)
        sft = load_model(sft_dir, torch.float32, Llama).to(device_)
        val_samples, val_rm = sample_and_score(sft, tokenizer, scorer, val, k, temperature, seed + 1000,
                                               max_new_tokens, progress=progress, speed=speed)
        save_json(threshold_path, {**choose_threshold(val_rm, oracle_scores(Oracle(val), val, val_samples)),
                                   "prompts": len(val), "k": k})
    if rounds and threshold_prompts:
        report["threshold"] = read_json(threshold_path)
        threshold = report["threshold"]["threshold"]
    best: dict[str, Kept] = {}
    for r in range(1, rounds + 1):
        round_dir = out_dir / f"round_{r}"
        if (round_dir / "metrics.json").is_file():
            best = {kept.prompt: kept for kept in (Kept(**row) for row in read_jsonl(round_dir / "kept.jsonl"))}
            report["rounds"].append(read_json(round_dir / "metrics.json"))
            policy_dir = round_dir / "model"
            continue
        policy = load_model(policy_dir, torch.float32, Llama).to(device_)
        if (round_dir / "samples.jsonl").is_file():
            samples, rm, truth = _load_samples(round_dir / "samples.jsonl")
        else:
            samples, rm = sample_and_score(policy, tokenizer, scorer, tasks, k, temperature, seed + r,
                                           max_new_tokens, progress=progress, speed=speed)
            truth = oracle_scores(oracle, tasks, samples)
            _save_samples(round_dir / "samples.jsonl", tasks, samples, rm, truth)
        picked = select_best(tasks, samples, rm)
        best = merge_best(best, [kp for kp in picked if threshold is None or kp.score >= threshold])
        if not best:
            raise ValueError(f"round {r}: no prompt's best answer clears the threshold {threshold:.3f}")
        write_jsonl(round_dir / "kept.jsonl", (kept._asdict() for kept in best.values()))
        policy = finetune_on_samples(policy, tokenizer, list(best.values()), round_dir / "train", epochs, lr,
                                     batch_size, seed=seed + r, device=device, progress=progress, speed=speed)
        save_model(policy, round_dir / "model")
        tokenizer.save(round_dir / "model")
        metrics = {"round": r, "judge": "oracle" if rm_dirs is None else "reward_models", "k": k,
                   "temperature": temperature, "prompts": len(tasks),
                   "samples": {**reward_vs_k(rm, [1, k]), **pick_quality(rm, truth, [1, k])},
                   "kept_mean_reward": float(np.mean([kept.score for kept in best.values()])),
                   "kept_prompts": len(best), "threshold": threshold,
                   "kept_labels": kept_labels(oracle, tasks, list(best.values())),
                   "eval": evaluate(policy)}
        save_json(round_dir / "metrics.json", metrics)
        report["rounds"].append(metrics)
        policy_dir = round_dir / "model"
    if rounds:
        save_json(out_dir / "metrics.json", report)
        plot_rounds(report, out_dir / "rounds.png")
    study_path = out_dir / "reward_vs_k.json"
    if study_prompts and not study_path.is_file():
        study_tasks = val_tasks(data_dir, study_prompts, study_prompts // 2)
        sft = load_model(sft_dir, torch.float32, Llama).to(device_).eval()
        study = reward_vs_k_study(sft, tokenizer, scorer, Oracle(study_tasks), study_tasks, study_temperatures,
                                  study_k, seed=seed, max_new_tokens=max_new_tokens, progress=progress, speed=speed)
        save_json(study_path, study)
        plot_reward_vs_k(study, out_dir / "reward_vs_k.png")
    if study_path.is_file():
        report["reward_vs_k"] = read_json(study_path)
    return report


def plot_rounds(report: dict[str, Any], path: str | Path) -> Figure:
    """The oracle's combined score and helpful accuracy (with 95% intervals) of the SFT model and
    after every round, written to ``path`` (png)."""
    stages = [("SFT", report["sft"])] + [(f"RS {m['round']}", m["eval"]) for m in report["rounds"]]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for metric, marker in (("combined", "o-"), ("helpful_accuracy", "s--")):
        stats = [s[metric] for _, s in stages]
        means = [st["mean"] for st in stats]
        errors = [[m - st["lo"] for m, st in zip(means, stats)], [st["hi"] - m for m, st in zip(means, stats)]]
        ax.errorbar(range(len(stages)), means, yerr=errors, fmt=marker, capsize=3, label=metric.replace("_", " "))
    ax.set_xticks(range(len(stages)), [name for name, _ in stages])
    ax.set_ylabel("oracle score on val prompts")
    ax.set_title("rejection sampling, round by round")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    return fig


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama rejection",
        description="Rejection sampling fine-tuning (Llama 2): K samples per prompt from the policy, the best by the "
                    "helpfulness and safety reward models (Llama 2's combination), SFT on the best, repeated for "
                    "--rounds. Writes OUT/round_N/ (samples, kept answers, model, metrics.json), OUT/metrics.json and "
                    "OUT/rounds.png; rerunning resumes. With --study-prompts it then samples --study-k answers at "
                    "each of --study-temperatures and writes OUT/reward_vs_k.json and .png (max and median reward vs "
                    "K, and the oracle's view of the pick); --rounds 0 runs the study alone.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sft", required=True, type=Path, help="the SFT model folder (or the SFT run folder)")
    p.add_argument("--judge", default="reward-models", choices=["reward-models", "oracle"],
                   help="who picks the best of K: the two reward models (the recipe), or the oracle itself (a "
                        "perfect judge: the ceiling of what fine-tuning on kept samples can gain)")
    p.add_argument("--rm-helpfulness", type=Path,
                   help="helpfulness reward model (or its run folder); needed unless --judge oracle")
    p.add_argument("--rm-safety", type=Path,
                   help="safety reward model (or its run folder); needed unless --judge oracle")
    p.add_argument("--tokenizer", type=Path,
                   help="tokenizer.model or its folder (default: the one saved with the SFT model)")
    p.add_argument("--data", required=True, type=Path, help="a `minillama data` folder (chat_*.jsonl, safety_*.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--rounds", type=int, default=2, help="rounds of sampling and fine-tuning")
    p.add_argument("--k", type=int, default=8, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--prompts", type=int, default=1000, help="training prompts sampled each round")
    p.add_argument("--safety-share", type=float, default=1 / 3,
                   help="fraction of the prompts drawn from the safety tasks (the rest: chat tasks)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the kept answers per round")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of the fine-tuning")
    p.add_argument("--batch-size", type=int, default=16, help="packed rows per step")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest sample, in tokens")
    p.add_argument("--eval-prompts", type=int, default=200, help="chat val prompts the oracle scores after each round")
    p.add_argument("--eval-safety", type=int, default=100, help="safety val prompts scored likewise")
    p.add_argument("--threshold-prompts", type=int, default=0,
                   help="chat val prompts (and half as many safety ones) whose K samples choose the reward a kept "
                        "answer must clear; 0: keep the best of K of every prompt (Llama 2)")
    p.add_argument("--study-prompts", type=int, default=0,
                   help="chat val prompts of the reward-vs-K study, and half as many safety ones (0: no study)")
    p.add_argument("--study-k", type=int, default=32, help="samples per prompt in the study")
    p.add_argument("--study-temperatures", type=float, nargs="+", default=[0.6, 1.0, 1.4],
                   help="temperatures of the study")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt subset, the samples and the data order")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_speed_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    needs_rms = args.judge == "reward-models" or args.study_prompts
    if needs_rms and (args.rm_helpfulness is None or args.rm_safety is None):
        parser.error("--rm-helpfulness and --rm-safety are required unless --judge oracle (the study always "
                     "reads the reward models)")
    tokenizer = Tokenizer.load(args.tokenizer or resolve_model_dir(args.sft))
    rm_dirs = None if args.judge == "oracle" else (args.rm_helpfulness, args.rm_safety)
    report = run_rejection(args.sft, rm_dirs, tokenizer, args.data, args.out, args.rounds, args.k, args.temperature,
                           args.prompts, args.epochs, args.lr, args.batch_size, args.max_new_tokens, args.eval_prompts,
                           args.eval_safety, args.seed, args.device, not args.no_progress, args.safety_share,
                           args.study_prompts, args.study_temperatures, args.study_k, args.threshold_prompts,
                           speed_from_args(args))
    if report["rounds"]:
        line = f"SFT combined {report['sft']['combined']['mean']:.3f}"
        line += "".join(f"; round {m['round']} {m['eval']['combined']['mean']:.3f}" for m in report["rounds"])
        print(f"rejection sampling (oracle, val prompts): {line}; models in {args.out}/round_N/model")
    if "reward_vs_k" in report:
        print(f"reward vs K on {report['reward_vs_k']['prompts']} prompts: {args.out / 'reward_vs_k.json'}")
    return 0
