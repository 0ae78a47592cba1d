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
pairs (:mod:`minillama.post.reward`) work too; then the "negligibly better / unsure" ones are best
left out (:func:`clear_pairs`): most are coin flips between two answers the oracle scores the same.
Rating levels and margins are not used by the loss.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.oracle import Oracle
from ..data.preferences import RATING_LEVELS, rating_level
from ..fileio import save_json
from ..model import Llama
from ..tokenizer import Tokenizer
from ..train import TrainConfig, Trainer
from .evaluate import evaluate_model, summary
from .reward import EncodedPair, Pair, PairBatches, collate_pairs, encode_pairs, load_pairs
from .sampling import sequence_logprobs
from .sft import resolve_model_dir, val_tasks

MODEL_DIR = "model"


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
    """The trainer's ``loss_fn`` for DPO on :func:`~minillama.post.reward.collate_pairs` batches
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


@torch.no_grad()
def evaluate_dpo(model: nn.Module, loss_fn: DPOLoss, pairs: Sequence[EncodedPair], batch_size: int = 32,
                 pad_id: int = 0) -> dict[str, float]:
    """Mean DPO loss, implicit-reward accuracy and margin over encoded pairs (the trainer's ``val_fn``)."""
    device = next(model.parameters()).device
    sums = {"val_loss": 0.0, "val_reward_accuracy": 0.0, "val_reward_margin": 0.0}
    for start in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(pairs[start:start + batch_size], pad_id).items()}
        loss, metrics = loss_fn(model, batch)
        n = metrics["count"]
        sums["val_loss"] += float(loss) * n
        sums["val_reward_accuracy"] += float(metrics["reward_accuracy"]) * n
        sums["val_reward_margin"] += float(metrics["reward_margin"]) * n
    return {k: v / len(pairs) for k, v in sums.items()}


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


def run_dpo(sft_dir: str | Path, tokenizer: Tokenizer, pairs: Sequence[Pair], out_dir: str | Path,
            beta: float = 0.1, nll_alpha: float = 0.0, epochs: float = 1.0, lr: float = 5e-5, batch_size: int = 16,
            seed: int = 0, val_pairs: Sequence[Pair] | None = None, device: str = "auto",
            progress: bool = True) -> Llama:
    """Train the SFT model in ``sft_dir`` with DPO on ``pairs`` (the shared trainer) against a frozen
    copy of itself, and save the policy to ``<out_dir>/model``. Rerunning resumes."""
    if not pairs:
        raise ValueError("pairs must not be empty")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    policy, reference = (Llama.from_pretrained(sft_dir, dtype=torch.float32) for _ in range(2))
    loss_fn = DPOLoss(reference, beta, nll_alpha)
    max_len = policy.config.max_seq_len
    train = encode_pairs(tokenizer, pairs, max_len, margins=None)
    val = encode_pairs(tokenizer, val_pairs or [], max_len, margins=None)
    steps = max(1, math.ceil(epochs * len(train) / batch_size))
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, round(0.1 * steps)) if steps > 1 else 0,
                         eval_interval=0, checkpoint_interval=max(1, steps // 4), seed=seed, device=device,
                         progress=progress)

    def val_fn(model: nn.Module) -> dict[str, float]:
        return evaluate_dpo(model, loss_fn, val, batch_size, tokenizer.pad_id)

    trainer = Trainer(policy, loss_fn, PairBatches(train, batch_size, seed, tokenizer.pad_id), config, out_dir,
                      val_fn if val else None)
    trainer.fit()
    policy.save_pretrained(Path(out_dir) / MODEL_DIR)
    return policy.eval()


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama dpo",
        description="Direct preference optimisation of the SFT model on preference pairs (jsonl: the on-policy "
                    "pairs `minillama course` writes to OUT/dpo/pairs.jsonl, or those `minillama reward` writes), "
                    "against a frozen copy of it. Writes OUT/model, OUT/metrics.jsonl, "
                    "OUT/loss.png and, with --data, OUT/metrics.json with the oracle's scores on val prompts. "
                    "Rerunning resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sft", required=True, type=Path,
                   help="the SFT model directory, or the SFT run directory holding model/ (policy start and reference)")
    p.add_argument("--tokenizer", type=Path,
                   help="tokenizer.model, or the directory holding it (default: the one `minillama sft` saved with "
                        "the SFT model)")
    p.add_argument("--pairs", required=True, type=Path, nargs="+", help="training pairs (jsonl)")
    p.add_argument("--val-pairs", type=Path, nargs="*", default=[], help="validation pairs (jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta: how far the policy may move from the reference")
    p.add_argument("--nll-alpha", type=float, default=0.0,
                   help="weight of the chosen responses' NLL per token (0: plain DPO; Llama 3 / RPO style: > 0)")
    p.add_argument("--max-pairs", type=int,
                   help="train on at most this many of the pairs, drawn at random (default: all of them); "
                        "'negligibly better / unsure' pairs are always left out")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--data", type=Path,
                   help="a `minillama data` folder: the oracle scores the trained policy on chat_val and safety_val")
    p.add_argument("--eval-prompts", type=int, default=300, help="val prompts of each file scored with --data")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.sft = resolve_model_dir(args.sft)
    tokenizer = Tokenizer.load(args.tokenizer or args.sft)
    pairs = clear_pairs(load_pairs(*args.pairs), args.max_pairs, args.seed)
    val_pairs = clear_pairs(load_pairs(*args.val_pairs))
    policy = run_dpo(args.sft, tokenizer, pairs, args.out, args.beta, args.nll_alpha, args.epochs, args.lr,
                     args.batch_size, args.seed, val_pairs, args.device, not args.no_progress)
    result: dict[str, Any] = {"beta": args.beta, "nll_alpha": args.nll_alpha, "pairs": len(pairs)}
    if args.data is not None:
        tasks = val_tasks(args.data, args.eval_prompts, args.eval_prompts)
        result["oracle"] = summary(evaluate_model(policy, tokenizer, Oracle(tasks), tasks, seed=args.seed),
                                   per_prompt=False)
    save_json(args.out / "metrics.json", result)
    print(f"DPO (beta {args.beta}, nll_alpha {args.nll_alpha}) on {len(pairs)} pairs: model in {args.out / MODEL_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
