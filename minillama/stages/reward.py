"""Reward models, Llama 2's third stage: preference pairs, the ranking loss with a margin, training,
and accuracy by rating level against what a perfect judge would get.

Llama 2 trains two reward models (helpfulness and safety) from its SFT model: the same backbone,
with the language-model head replaced by a scalar head read at the last token
(:class:`~minillama.model.LlamaRewardModel`). Each is trained on pairs ``(prompt, chosen,
rejected)`` with a binary ranking loss that asks the chosen reward to exceed the rejected one by a
margin that grows with how clearly the chosen response is better::

    loss = -log sigmoid(r(x, y_chosen) - r(x, y_rejected) - m(rating))

Here the oracle plays the human annotators. For every prompt the candidates are the model's own
samples, the oracle's reference and the distractors of :mod:`minillama.data.preferences`; each is
scored by the oracle on the reward model's axis (helpfulness or safety), and two candidates with
different scores make a pair rated by their score gap (:func:`~minillama.data.rating_level`; how
ties become "negligibly better / unsure" pairs is told there).

``minillama reward --kind helpfulness --sft RUN/sft --data DATA --out OUT`` runs the stage.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from ..chat import sample_responses
from ..checkpoint import load_model, resolve_model_dir, save_model
from ..data import Oracle, Task
from ..data.files import load_tasks
from ..data.preferences import (AXES, QUALITIES, RATING_LEVELS, Pair, check_axis, distractors, level_counts, load_pairs,
                                pairs_from_candidates, save_pairs)
from ..evaluate.rewards import raw_rewards
from ..fileio import atomic_write, save_json
from ..model import Llama, LlamaRewardModel
from ..speed import Speed, add_speed_arguments, speed_from_args
from ..tokenizer import Tokenizer
from ..train import DistEnv
from ..train.pairs import train_on_pairs

# Llama 2's two margin tables (its "margin small" and "margin large"), in RATING_LEVELS order:
# significantly better, better, slightly better, negligibly better / unsure. "small" is the
# default: rewards are read through a sigmoid for the 0.15 safety threshold, and margins of 3
# push raw rewards far enough apart to saturate it.
MARGINS: dict[str, tuple[float, ...]] = {"small": (1.0, 2 / 3, 1 / 3, 0.0), "large": (3.0, 2.0, 1.0, 0.0)}


# ---------------------------------------------------------------------------------- pairs
def build_preference_pairs(model: Llama | None, tokenizer: Tokenizer, oracle: Oracle, tasks: Sequence[Task],
                           kind: str, n_samples: int = 4, temperature: float = 1.0, seed: int = 0,
                           max_pairs_per_task: int = 6, max_new_tokens: int = 64, batch_size: int = 64,
                           progress: bool = False, speed: Speed = Speed()) -> list[Pair]:
    """Preference pairs for the ``kind`` reward model, in task order; the same arguments give the
    same pairs. ``model=None`` (or ``n_samples=0``) builds them from the reference and the
    distractors alone. Which tasks a reward model sees is the caller's choice (see
    :func:`reward_tasks`)."""
    check_axis(kind)
    if max_pairs_per_task < 1:
        raise ValueError(f"max_pairs_per_task must be >= 1, got {max_pairs_per_task}")
    tasks = list(tasks)
    if model is not None and n_samples > 0:
        samples = sample_responses(model, tokenizer, [t.prompt for t in tasks], n_samples=n_samples,
                                   temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   seed=seed, progress=progress, **speed.sampling())
    else:
        samples = [[] for _ in tasks]
    pairs = []
    for task, own in zip(tasks, samples):
        # One generator per prompt, seeded by it: a task's pairs do not depend on its neighbours.
        rng = random.Random(f"{seed}:{kind}:{task.prompt}")
        offered = [(text, True) for text in own] + [(oracle.reference(task), False)]
        offered += [(r.text, False) for r in distractors(task, rng)]
        first: dict[str, bool] = {}  # each text once, as it was first offered
        for text, is_sample in offered:
            first.setdefault(text, is_sample)
        pairs += pairs_from_candidates(oracle, task, list(first.items()), kind, rng, max_pairs_per_task)
    return pairs


def reward_tasks(chat: Sequence[Task], safety: Sequence[Task], kind: str, n: int) -> list[Task]:
    """About ``n`` prompts for a ``kind`` reward model. Helpfulness: harmless chat tasks and a
    fifth borderline ones (harmless requests that only look risky). Safety: off-limits and
    borderline requests, and a third harmless chat tasks, so that refusing those counts as worse."""
    check_axis(kind)
    if kind == "helpfulness":
        borderline = [t for t in safety if t.safety == "borderline"][:n // 5]
        return list(chat[:n - len(borderline)]) + borderline
    benign = list(chat[:n // 3])
    return list(safety[:n - len(benign)]) + benign


# ---------------------------------------------------------------------------------- the loss
def margin_for(rating: str, margins: str = "small") -> float:
    """Llama 2's margin for a pair rated ``rating``, from the ``"small"`` or ``"large"`` table."""
    if margins not in MARGINS:
        raise ValueError(f"margins must be one of {sorted(MARGINS)}, got {margins!r}")
    if rating not in RATING_LEVELS:
        raise ValueError(f"rating must be one of {RATING_LEVELS}, got {rating!r}")
    return MARGINS[margins][RATING_LEVELS.index(rating)]


def ranking_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                 margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``mean(-log sigmoid(r_chosen - r_rejected - margin))`` over pairs; ``(b,), (b,), (b,) -> ()``.

    ``logsigmoid`` keeps it finite where the rewards are far apart."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


class RewardLoss:
    """The trainer's ``loss_fn``: the ranking loss of a :func:`~minillama.train.pairs.collate_pairs`
    batch (count = pairs), with the margin table ``margins`` (None: no margin, plain Bradley-Terry)."""

    def __init__(self, margins: str | None = "small") -> None:
        if margins is not None and margins not in MARGINS:
            raise ValueError(f"margins must be None or one of {sorted(MARGINS)}, got {margins!r}")
        self.table = torch.tensor(MARGINS[margins] if margins else (0.0,) * len(RATING_LEVELS))

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        rewards = model(batch["input_ids"], batch["attention_mask"]).float()
        chosen, rejected = rewards.chunk(2)
        loss = ranking_loss(chosen, rejected, self.table.to(rewards.device)[batch["rating"]])
        return loss, {"count": chosen.shape[0], "tokens": int(batch["attention_mask"].sum()),
                      "accuracy": (chosen > rejected).float().mean().detach()}


# ---------------------------------------------------------------------------------- training, accuracy
def train_reward_model(init_lm_dir: str | Path, tokenizer: Tokenizer, pairs: Sequence[Pair], out_dir: str | Path,
                       epochs: float = 1.0, lr: float = 1e-4, margins: str | None = "small", batch_size: int = 16,
                       seed: int = 0, val_pairs: Sequence[Pair] | None = None, device: str = "auto",
                       progress: bool = True, speed: Speed = Speed()) -> LlamaRewardModel:
    """Train a reward model from the language model in ``init_lm_dir`` (the SFT model) on ``pairs``
    with the shared :class:`~minillama.train.Trainer`, and save it to ``<out_dir>/model``.

    Llama 2's recipe, scaled down: one epoch, a learning rate an order of magnitude below
    pretraining's, 3% warmup, cosine decay to 10%. ``margins=None`` trains without margins
    (the plain Bradley-Terry loss). Rerunning with the same ``out_dir`` resumes."""
    if not pairs:
        raise ValueError("pairs must not be empty")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    rm = LlamaRewardModel.from_lm(load_model(init_lm_dir, dtype=torch.float32, kind=Llama))
    train_on_pairs(rm, RewardLoss(margins), tokenizer, pairs, out_dir, val_pairs=val_pairs or (), epochs=epochs,
                   lr=lr, batch_size=batch_size, warmup_share=0.03, seed=seed, device=device, progress=progress,
                   speed=speed)
    save_model(rm, Path(out_dir) / "model")
    return rm.eval()


def pair_accuracy(rm: LlamaRewardModel, tokenizer: Tokenizer, pairs: Sequence[Pair],
                  batch_size: int = 32) -> dict[str, Any]:
    """How often the reward model ranks the chosen response above the rejected one: overall and per
    rating level and per quality that tells the pair apart (``by_quality``, see
    :func:`~minillama.data.preferences.pair_quality`; a tie counts as half right, so an untrained
    model with a zero head scores 0.5).
    ``ceiling`` is what a perfect judge expects on the same pairs: every pair right but the
    coin-flip ones (``Pair.unsure``), of which it gets half; the reward model's accuracy is bounded
    by it, not by 100%."""
    if not pairs:
        raise ValueError("pairs must not be empty")
    prompts = [p.prompt for p in pairs]
    chosen = raw_rewards(rm, tokenizer, prompts, [p.chosen for p in pairs], batch_size)
    rejected = raw_rewards(rm, tokenizer, prompts, [p.rejected for p in pairs], batch_size)
    right = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    best = 1.0 - 0.5 * torch.tensor([float(p.unsure) for p in pairs])

    def by(field: str, values: Sequence[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for value in values:
            rows = torch.tensor([getattr(p, field) == value for p in pairs])
            if rows.any():
                out[value] = {"accuracy": float(right[rows].mean()), "n": int(rows.sum()),
                              "ceiling": float(best[rows].mean())}
        return out

    return {"accuracy": float(right.mean()), "n": len(pairs), "by_level": by("rating", RATING_LEVELS),
            "by_quality": by("quality", QUALITIES), "ceiling": float(best.mean()),
            "mean_reward_gap": float((chosen - rejected).mean())}


def plot_accuracy(metrics: dict[str, dict[str, Any]], path: str | Path, title: str = "reward model") -> Figure:
    """Bars of accuracy per rating level, one group per entry of ``metrics`` (e.g. with and without
    margin), a perfect judge's ceiling as a tick; written to ``path`` (png) atomically."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(len(metrics), 1)
    for k, (name, result) in enumerate(metrics.items()):
        levels = [level for level in RATING_LEVELS if level in result["by_level"]]
        xs = [RATING_LEVELS.index(level) + (k - (len(metrics) - 1) / 2) * width for level in levels]
        ax.bar(xs, [result["by_level"][level]["accuracy"] for level in levels], width,
               label=f"{name.replace('_', ' ')} (all: {result['accuracy']:.2f})")
        ax.scatter(xs, [result["by_level"][level]["ceiling"] for level in levels], marker="_", s=300, color="black",
                   zorder=3, label="a perfect judge" if k == 0 else None)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(range(len(RATING_LEVELS)), [level.replace(" / ", "/\n") for level in RATING_LEVELS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out pair accuracy")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    return fig


# ---------------------------------------------------------------------------------- the stage
def run_reward(sft_dir: str | Path, tokenizer: Tokenizer, data_dir: str | Path, out_dir: str | Path, kind: str,
               prompts: int = 2000, val_prompts: int | None = None, samples: int = 4, temperature: float = 1.0,
               max_new_tokens: int = 64, pairs_per_task: int = 6, margins: str | None = "small",
               without_margin: bool = False, epochs: float = 1.0, lr: float = 1e-4, batch_size: int = 16,
               seed: int = 0, device: str = "auto", progress: bool = True, speed: Speed = Speed()) -> dict[str, Any]:
    """Build the ``kind`` reward model's pairs from the SFT model in ``sft_dir`` (``samples`` of its
    answers per prompt, the references and the distractors, labelled by the oracle) for ``prompts``
    training and ``val_prompts`` (default a third as many) validation prompts of ``data_dir``;
    train a reward model with the ``margins`` table (``OUT/margin``, or ``OUT/no_margin`` when it is
    None) and, with ``without_margin``, one without for comparison (``OUT/no_margin``); score them
    on the held-out pairs.

    Writes ``OUT/pairs_{train,val}.jsonl`` (reused on a rerun: a crash in training samples nothing
    again), the models, ``OUT/accuracy.png`` and ``OUT/metrics.json``, and returns that dict: the
    pairs per rating level and each model's :func:`pair_accuracy` under ``"margin"`` / ``"no_margin"``."""
    check_axis(kind)
    out_dir, sft_dir = Path(out_dir), resolve_model_dir(sft_dir)
    paths = {split: out_dir / f"pairs_{split}.jsonl" for split in ("train", "val")}
    if not all(p.is_file() for p in paths.values()):
        sft = load_model(sft_dir, dtype=torch.float32, kind=Llama).to(DistEnv().device(device)) if samples else None
        for split, n in (("train", prompts), ("val", prompts // 3 if val_prompts is None else val_prompts)):
            tasks = reward_tasks(load_tasks(data_dir, f"chat_{split}"), load_tasks(data_dir, f"safety_{split}"),
                                 kind, n)
            pairs = build_preference_pairs(sft, tokenizer, Oracle(tasks), tasks, kind, samples, temperature,
                                           seed + (split == "val"), pairs_per_task, max_new_tokens, progress=progress,
                                           speed=speed)
            save_pairs(paths[split], pairs)
    train_pairs, val_pairs = load_pairs(paths["train"]), load_pairs(paths["val"])
    metrics: dict[str, Any] = {"kind": kind, "margins": margins, "train_pairs": level_counts(train_pairs),
                               "val_pairs": level_counts(val_pairs)}
    variants = {"margin" if margins else "no_margin": margins}
    if without_margin:
        variants["no_margin"] = None
    for variant, table in variants.items():
        if not (out_dir / variant / "model" / "model.safetensors").is_file():
            train_reward_model(sft_dir, tokenizer, train_pairs, out_dir / variant, epochs, lr, table, batch_size,
                               seed, device=device, progress=progress, speed=speed)
        rm = load_model(out_dir / variant, kind=LlamaRewardModel)
        metrics[variant] = pair_accuracy(rm, tokenizer, val_pairs)
    plot_accuracy({v: metrics[v] for v in variants}, out_dir / "accuracy.png",
                  f"{kind} reward model: held-out pair accuracy by rating level")
    save_json(out_dir / "metrics.json", metrics)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama reward",
        description="Build oracle-labelled preference pairs from the SFT model's samples, the references and the "
                    "distractors, and train a helpfulness or safety reward model on them (Llama 2's ranking loss "
                    "with a margin). Writes OUT/pairs_{train,val}.jsonl, OUT/margin/model (a model folder), "
                    "OUT/metrics.json and OUT/accuracy.png. Rerunning resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--kind", required=True, choices=AXES, help="which reward model")
    p.add_argument("--sft", required=True, type=Path,
                   help="the SFT model folder, or the SFT run folder holding model/ (the reward model starts from it)")
    p.add_argument("--tokenizer", type=Path,
                   help="tokenizer.model, or the folder holding it (default: the one `minillama sft` saved with "
                        "the SFT model)")
    p.add_argument("--data", required=True, type=Path,
                   help="a `minillama data` folder (chat_{train,val}.jsonl, safety_{train,val}.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--prompts", type=int, default=2000, help="training prompts to build pairs from")
    p.add_argument("--val-prompts", type=int, help="validation prompts to build pairs from (default: a third of "
                                                    "--prompts)")
    p.add_argument("--samples", type=int, default=4, help="SFT model samples per prompt among the candidates")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of those samples")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest sample, in tokens")
    p.add_argument("--pairs-per-task", type=int, default=6, help="most pairs kept per prompt")
    p.add_argument("--margins", default="small", choices=[*sorted(MARGINS), "none"],
                   help="Llama 2's margin table, or none (plain ranking loss)")
    p.add_argument("--without-margin", action="store_true",
                   help="also train a reward model without margins on the same pairs, for comparison")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, the pair choice and the data order")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_speed_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tokenizer = Tokenizer.load(args.tokenizer or resolve_model_dir(args.sft))
    metrics = run_reward(args.sft, tokenizer, args.data, args.out, args.kind, args.prompts, args.val_prompts,
                         args.samples, args.temperature, args.max_new_tokens, args.pairs_per_task,
                         None if args.margins == "none" else args.margins, args.without_margin, args.epochs,
                         args.lr, args.batch_size, args.seed, args.device, not args.no_progress, speed_from_args(args))
    for variant in ("margin", "no_margin"):
        if variant in metrics:
            acc = metrics[variant]
            print(f"{args.kind} reward model, {variant.replace('_', ' ')}: accuracy {acc['accuracy']:.3f} on "
                  f"{acc['n']} held-out pairs (a perfect judge: {acc['ceiling']:.3f}); model in "
                  f"{args.out / variant / 'model'}")
    return 0
