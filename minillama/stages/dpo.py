"""Direct preference optimisation (DPO): train the policy on preference pairs with no reward model.

DPO reads the policy's log-probability ratio to a frozen reference (the SFT model) as an implicit
reward, ``beta * (log pi(y|x) - log ref(y|x))``, and fits it to the pairs with the same logistic
loss a reward model uses::

    loss = -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))

``y_w`` is the chosen response, ``y_l`` the rejected one. With ``nll_alpha > 0`` the loss also
gets ``nll_alpha`` times the policy's negative log-likelihood of the chosen response per token,
as iterative RPO and Llama 3's DPO recipe add: pure DPO can lower the chosen response's
likelihood too, as long as the rejected one falls faster, and the NLL term keeps it up.

The course builds DPO's pairs the way Llama 3 did, on policy: the SFT model's own samples for the
rejection-sampling prompts, ranked by the oracle (:func:`oracle_pairs`), so DPO and rejection
sampling learn from the same prompts, the same samples and the same judge, DPO from its
preferences directly and rejection sampling through the reward models. The reward models'
pairs (:mod:`minillama.stages.reward`) work too; then the "negligibly better / unsure" ones are best
left out (:func:`clear_pairs`): most are coin flips between two answers the oracle scores the same.
Rating levels and margins are not used by the loss.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_model, resolve_model_dir, save_model
from ..data.files import load_tasks, read_samples, val_tasks
from ..data.oracle import Oracle
from ..data.preferences import RATING_LEVELS, Pair, load_pairs, rating_level, save_pairs
from ..data.tasks import SAFETY_CLASSES
from ..evaluate.oracle import evaluate_model, summary
from ..fileio import save_json
from ..model import Llama
from ..speed import Speed, add_speed_arguments, speed_from_args
from ..sequences import sequence_logprobs
from ..tokenizer import Tokenizer
from ..train.pairs import train_on_pairs


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1,
             chosen_tokens: torch.Tensor | None = None, nll_alpha: float = 0.0) -> tuple[torch.Tensor, dict[str, Any]]:
    """The DPO loss of a batch of pairs, from summed response log-probabilities (each ``(b,)``).

    ``chosen_tokens (b,)`` counts the chosen responses' tokens; it is needed when ``nll_alpha > 0``,
    which adds ``nll_alpha * mean(-policy_chosen_logps / chosen_tokens)``. Returns the mean loss
    and metrics: the implicit rewards ``beta * (policy - ref)`` of both sides, their margin, how
    often the chosen one is higher, and the chosen NLL per token."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if nll_alpha < 0:
        raise ValueError(f"nll_alpha must be >= 0, got {nll_alpha}")
    chosen_reward = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_reward = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    metrics: dict[str, Any] = {
        "dpo_loss": loss.detach(), "chosen_reward": chosen_reward.mean().detach(),
        "rejected_reward": rejected_reward.mean().detach(),
        "reward_margin": (chosen_reward - rejected_reward).mean().detach(),
        "reward_accuracy": (chosen_reward > rejected_reward).float().mean().detach(),
    }
    if chosen_tokens is not None:
        nll = (-policy_chosen_logps / chosen_tokens.clamp(min=1)).mean()
        metrics["chosen_nll"] = nll.detach()
        loss = loss + nll_alpha * nll
    elif nll_alpha > 0:
        raise ValueError("nll_alpha > 0 needs chosen_tokens (the number of tokens of each chosen response)")
    return loss, metrics


class DPOLoss:
    """The trainer's ``loss_fn`` for DPO on :func:`~minillama.train.pairs.collate_pairs` batches
    (count = pairs). Holds the frozen reference model; its log-probabilities take no gradient."""

    def __init__(self, reference: nn.Module, beta: float = 0.1, nll_alpha: float = 0.0) -> None:
        self.reference = reference.eval().requires_grad_(False)
        self.beta, self.nll_alpha = beta, nll_alpha

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        ids, mask, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        if next(self.reference.parameters()).device != ids.device:
            self.reference.to(ids.device)
        policy = sequence_logprobs(model, ids, mask, response).float()
        with torch.no_grad():
            ref = sequence_logprobs(self.reference, ids, mask, response).float()
        b = ids.shape[0] // 2
        loss, metrics = dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], self.beta,
                                 response[:b].sum(-1).float(), self.nll_alpha)
        return loss, {**metrics, "count": b, "tokens": int(mask.sum())}


def oracle_pairs(prompts: Sequence[str], samples: Sequence[Sequence[str]],
                 scores: np.ndarray | Sequence[Sequence[float]], per_prompt: int = 2) -> list[Pair]:
    """On-policy preference pairs from ``K`` scored samples per prompt, as Llama 3 built its DPO
    data: the best sample against the worst, the second best against the second worst, and so on
    (``per_prompt`` pairs at most), wherever the two scores differ. ``scores (n, K)`` are the
    oracle's (combined) scores; a pair's rating follows their gap."""
    pairs = []
    for prompt, texts, row in zip(prompts, samples, scores):
        row = np.asarray(row, dtype=float)
        order = np.argsort(-row, kind="stable")  # best first, ties in sample order
        for rank in range(min(per_prompt, len(order) // 2)):
            hi, lo = order[rank], order[-1 - rank]
            if row[hi] > row[lo] and texts[hi] != texts[lo]:
                pairs.append(Pair(prompt, texts[hi], texts[lo], rating_level(row[hi], row[lo]),
                                  float(row[hi] - row[lo])))
    return pairs


def balance_risky(pairs: Sequence[Pair], safety: Mapping[str, str], seed: int = 0) -> list[Pair]:
    """At most as many pairs from borderline prompts as from off-limits ones: a random draw (the
    same ``seed``, the same draw) of the borderline pairs, every other pair kept, order kept.
    ``safety`` maps each pair's prompt to its task's class (``Task.safety``: benign, borderline,
    unsafe).

    Why: on policy, the two kinds of risky-looking prompt do not give pairs alike. A model that
    already refuses off-limits requests has few compliant samples to set against its refusals
    there, while on borderline prompts (harmless requests that mention what is off-limits) every
    pair prefers an answer, often to the model's own refusal. Trained on all of them, DPO learns
    to answer risky-looking requests, the off-limits ones included. Pairs that set a refusal
    against a *written* compliance do not hold it back: the policy never says that text, so
    pushing its probability down changes little of what the policy does."""
    unknown = {p.prompt for p in pairs} - set(safety)
    if unknown:
        raise ValueError(f"no safety class for {len(unknown)} prompt(s), e.g. {next(iter(unknown))!r}")
    borderline = [i for i, p in enumerate(pairs) if safety[p.prompt] == "borderline"]
    cap = sum(safety[p.prompt] == "unsafe" for p in pairs)
    dropped = set(borderline) - set(random.Random(seed).sample(borderline, min(cap, len(borderline))))
    return [p for i, p in enumerate(pairs) if i not in dropped]


def clear_pairs(pairs: Sequence[Pair], max_pairs: int | None = None, seed: int = 0) -> list[Pair]:
    """The pairs DPO learns from: all but the "negligibly better / unsure" ones, and at most
    ``max_pairs`` of them drawn at random (the same ``seed``, the same draw; order kept)."""
    clear = [p for p in pairs if p.rating != RATING_LEVELS[-1]]
    if max_pairs is None or max_pairs >= len(clear):
        return clear
    keep = sorted(random.Random(seed).sample(range(len(clear)), max_pairs))
    return [clear[i] for i in keep]


def on_policy_pairs(samples_path: str | Path, safety: Mapping[str, str], per_prompt: int = 4,
                    seed: int = 0) -> tuple[list[Pair], dict[str, dict[str, int]]]:
    """The pairs DPO trains on from a rejection-sampling round's ``samples.jsonl`` (every prompt's
    samples and their oracle scores): :func:`oracle_pairs`, then :func:`balance_risky`. Also returns
    the pairs per prompt class (``safety`` maps a prompt to ``Task.safety``) before and after."""
    rows = read_samples(samples_path)
    ranked = oracle_pairs([r["prompt"] for r in rows], [r["samples"] for r in rows], [r["oracle"] for r in rows],
                          per_prompt)
    pairs = balance_risky(ranked, safety, seed)
    by_class = {name: {cls: sum(safety[p.prompt] == cls for p in group) for cls in SAFETY_CLASSES}
                for name, group in (("on_policy", ranked), ("trained", pairs))}
    return pairs, by_class


def run_dpo(sft_dir: str | Path, tokenizer: Tokenizer, out_dir: str | Path, *, samples: str | Path | None = None,
            data_dir: str | Path | None = None, pairs: Sequence[str | Path] = (), val_pairs: Sequence[str | Path] = (),
            pairs_per_prompt: int = 4, max_pairs: int | None = None, max_val_pairs: int | None = None,
            beta: float = 0.1, nll_alpha: float = 0.0, epochs: float = 1.0, lr: float = 5e-5, batch_size: int = 16,
            eval_prompts: int = 0, seed: int = 0, device: str = "auto", progress: bool = True,
            speed: Speed = Speed()) -> dict[str, Any]:
    """Train the SFT model in ``sft_dir`` with DPO against a frozen copy of itself, and save the
    policy to ``<out_dir>/model``. Rerunning resumes.

    The pairs: on policy from a rejection-sampling round's ``samples`` (:func:`on_policy_pairs`, whose
    prompt classes come from ``data_dir``), or read from ``pairs`` files (jsonl, as the reward stage
    writes them); the "negligibly better / unsure" ones are left out and at most ``max_pairs`` kept
    (:func:`clear_pairs`). ``val_pairs`` files check the implicit reward on held-out pairs. With
    ``eval_prompts`` and ``data_dir`` the oracle scores the policy on that many chat and safety
    validation prompts. Writes ``pairs.jsonl`` (what it trained on), ``pairs_by_class.json`` (on
    policy) and ``metrics.json``, and returns the latter."""
    if (samples is None) == (not pairs):
        raise ValueError("give one source of pairs: samples (a rejection round's samples.jsonl) or pairs files")
    if (samples is not None or eval_prompts) and data_dir is None:
        raise ValueError("data_dir is needed for on-policy pairs (their prompt classes) and for the oracle's scores")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    out_dir, sft_dir = Path(out_dir), resolve_model_dir(sft_dir)
    metrics: dict[str, Any] = {"beta": beta, "nll_alpha": nll_alpha}
    if samples is not None:
        safety = {t.prompt: t.safety for t in load_tasks(data_dir, "chat_train", "safety_train")}
        train_pairs, metrics["pairs_by_class"] = on_policy_pairs(samples, safety, pairs_per_prompt, seed)
        save_json(out_dir / "pairs_by_class.json", metrics["pairs_by_class"])
    else:
        train_pairs = load_pairs(*pairs)
    train_pairs = clear_pairs(train_pairs, max_pairs, seed)
    if not train_pairs:
        raise ValueError("no pairs to train on")
    save_pairs(out_dir / "pairs.jsonl", train_pairs)  # `minillama dpo --pairs` takes this file to redo the stage
    held_out = clear_pairs(load_pairs(*val_pairs), max_val_pairs, seed) if val_pairs else []
    metrics.update(pairs=len(train_pairs), val_pairs=len(held_out))

    policy, reference = (load_model(sft_dir, torch.float32, Llama) for _ in range(2))
    train_on_pairs(policy, DPOLoss(reference, beta, nll_alpha), tokenizer, train_pairs, out_dir, val_pairs=held_out,
                   epochs=epochs, lr=lr, batch_size=batch_size, warmup_share=0.1, seed=seed, device=device,
                   progress=progress, speed=speed)
    save_model(policy.eval(), out_dir / "model")
    if eval_prompts:
        tasks = val_tasks(data_dir, eval_prompts, eval_prompts)
        metrics["oracle"] = summary(evaluate_model(policy, tokenizer, Oracle(tasks), tasks, seed=seed, speed=speed),
                                    per_prompt=False)
    save_json(out_dir / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama dpo",
        description="Direct preference optimisation of the SFT model against a frozen copy of it, on the SFT model's "
                    "own samples ranked by the oracle (--samples: a rejection round's samples.jsonl, as Llama 3 built "
                    "its DPO data) or on pairs from files (--pairs: jsonl, e.g. what `minillama reward` writes). "
                    "Writes OUT/model, OUT/pairs.jsonl, OUT/metrics.json, OUT/metrics.jsonl and OUT/loss.png. "
                    "Rerunning resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sft", required=True, type=Path,
                   help="the SFT model folder, or the SFT run folder holding model/ (policy start and reference)")
    p.add_argument("--tokenizer", type=Path,
                   help="tokenizer.model, or the folder holding it (default: the one `minillama sft` saved with "
                        "the SFT model)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", type=Path,
                        help="a rejection round's samples.jsonl: on-policy pairs, best against worst by the oracle")
    source.add_argument("--pairs", type=Path, nargs="+", help="training pairs (jsonl)")
    p.add_argument("--data", type=Path,
                   help="a `minillama data` folder: the prompt classes of --samples, and the prompts of --eval-prompts")
    p.add_argument("--val-pairs", type=Path, nargs="*", default=[], help="validation pairs (jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--pairs-per-prompt", type=int, default=4, help="most on-policy pairs per prompt (with --samples)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta: how far the policy may move from the reference")
    p.add_argument("--nll-alpha", type=float, default=0.0,
                   help="weight of the chosen responses' NLL per token (0: plain DPO; Llama 3 / RPO style: > 0)")
    p.add_argument("--max-pairs", type=int,
                   help="train on at most this many of the pairs, drawn at random (default: all of them); "
                        "'negligibly better / unsure' pairs are always left out")
    p.add_argument("--max-val-pairs", type=int, help="validate on at most this many of the validation pairs")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--eval-prompts", type=int, default=0,
                   help="chat and safety val prompts (each) the oracle scores the trained policy on (needs --data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair choice and the data order")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_speed_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tokenizer = Tokenizer.load(args.tokenizer or resolve_model_dir(args.sft))
    metrics = run_dpo(args.sft, tokenizer, args.out, samples=args.samples, data_dir=args.data, pairs=args.pairs or (),
                      val_pairs=args.val_pairs, pairs_per_prompt=args.pairs_per_prompt, max_pairs=args.max_pairs,
                      max_val_pairs=args.max_val_pairs, beta=args.beta, nll_alpha=args.nll_alpha, epochs=args.epochs,
                      lr=args.lr, batch_size=args.batch_size, eval_prompts=args.eval_prompts, seed=args.seed,
                      device=args.device, progress=not args.no_progress, speed=speed_from_args(args))
    line = (f"DPO (beta {args.beta}, nll_alpha {args.nll_alpha}) on {metrics['pairs']} pairs: "
            f"model in {args.out / 'model'}")
    if "oracle" in metrics:
        line += f"; combined score on val prompts {metrics['oracle']['combined']['mean']:.3f}"
    print(line)
    return 0
