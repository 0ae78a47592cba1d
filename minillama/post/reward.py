"""Reward models, Llama 2's third stage: preference pairs, the ranking loss with a margin, training,
accuracy by rating level, and the combined helpfulness/safety score that rejection sampling uses.

Llama 2 trains two reward models (helpfulness and safety) from its SFT model: the same backbone,
with the language-model head replaced by a scalar head read at the last token
(:class:`~minillama.model.LlamaRewardModel`). Each is trained on pairs ``(prompt, chosen,
rejected)`` with a binary ranking loss that asks the chosen reward to exceed the rejected one by a
margin that grows with how clearly the chosen response is better::

    loss = -log sigmoid(r(x, y_chosen) - r(x, y_rejected) - m(rating))

Here the oracle plays the human annotators. For every prompt the candidates are the model's own
samples, the oracle's reference and the distractors of :mod:`minillama.data.preferences`; each is
scored by the oracle on the reward model's axis (helpfulness or safety), and two candidates with
different scores make a pair rated by their score gap (:func:`~minillama.data.rating_level`).
Two candidates with the same score are a close call, "negligibly better / unsure": when a finer
signal on the same axis tells them apart (of two unsafe replies, the one that gives away less of
the secret) it picks the chosen one, otherwise the annotator is unsure and a coin flip does (see
:func:`preference_key`). So the reward model can do little better than chance on unsure pairs, as
Llama 2's reward models did on theirs; ordering ties by the *other* axis instead (a wrong answer
over a refusal) would make the level the easiest of all, a refusal being easy to spot. The
oracle's safety scores are 0, 0.5 and 1, so safety pairs are "significantly better", "better" or
"negligibly better / unsure", never "slightly better".
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ..config import LlamaConfig
from ..data.oracle import SAFETY_THRESHOLD, Oracle, leaked
from ..data.preferences import RATING_LEVELS, distractors, rating_level
from ..data.tasks import Task
from ..fileio import atomic_write, save_json, save_tensors
from ..hf import load_state_dict_checked
from ..model import Llama, LlamaRewardModel
from ..tokenizer import Tokenizer
from ..train import DistEnv, TrainConfig, Trainer
from .sampling import sample_responses
from .sft import read_tasks, resolve_model_dir

REWARD_KINDS: tuple[str, ...] = ("helpfulness", "safety")
# Llama 2's two margin tables (its "margin small" and "margin large"), in RATING_LEVELS order:
# significantly better, better, slightly better, negligibly better / unsure. "small" is the
# default: rewards are read through a sigmoid for the 0.15 safety threshold, and margins of 3
# push raw rewards far enough apart to saturate it.
MARGINS: dict[str, tuple[float, ...]] = {"small": (1.0, 2 / 3, 1 / 3, 0.0), "large": (3.0, 2.0, 1.0, 0.0)}
MODEL_DIR, CONFIG_FILE, WEIGHTS_FILE = "model", "config.json", "model.safetensors"


# ---------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` is the better response to ``prompt``. ``gap`` is the oracle's
    score of chosen minus rejected on the reward model's axis (0 for a close call: a tie on it).
    ``unsure`` marks a pair the oracle cannot order at all (equal score and no finer signal): a
    coin flip chose ``chosen``, so no judge, the oracle included, expects more than half of such
    pairs right."""

    prompt: str
    chosen: str
    rejected: str
    rating: str  # one of RATING_LEVELS
    gap: float
    unsure: bool = False

    def __post_init__(self) -> None:
        if self.rating not in RATING_LEVELS:
            raise ValueError(f"Pair.rating must be one of {RATING_LEVELS}, got {self.rating!r}")
        if not 0.0 <= self.gap <= 1.0:
            raise ValueError(f"Pair.gap must be in [0, 1], got {self.gap}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        return cls(**data)


def save_pairs(path: str | Path, pairs: Sequence[Pair]) -> None:
    """Write one pair per line (json), atomically."""
    text = "".join(json.dumps(p.to_dict(), sort_keys=True) + "\n" for p in pairs)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_pairs(*paths: str | Path) -> list[Pair]:
    pairs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            pairs += [Pair.from_dict(json.loads(line)) for line in f if line.strip()]
    return pairs


def _check_kind(kind: str) -> None:
    if kind not in REWARD_KINDS:
        raise ValueError(f"kind must be one of {REWARD_KINDS}, got {kind!r}")


def preference_key(oracle: Oracle, task: Task, response: str, kind: str) -> tuple[float, float]:
    """``(score, tie_breaker)``: the oracle's score on the ``kind`` axis, and a finer signal on the
    same axis that orders two responses with the same score, 0 where there is none. Only safety on
    an off-limits prompt has one: how little of the secret a response gives away (an off-topic
    reply beats full compliance). Two responses with equal keys are an unsure call."""
    _check_kind(kind)
    if kind == "helpfulness":
        return oracle.helpfulness(task, response).score, 0.0
    score = oracle.safety(task, response).score
    if task.risky:
        return score, -len(leaked(task, response)) / len(set(task.target))
    return score, 0.0


def _task_pairs(oracle: Oracle, task: Task, candidates: list[tuple[str, bool]], kind: str, rng: random.Random,
                max_pairs: int) -> list[Pair]:
    """Every pair of ``candidates`` (text, is_model_sample), ordered by :func:`preference_key` or,
    where the keys are equal, by a coin flip (an unsure call); then at most ``max_pairs`` of them
    taken round-robin over the rating levels, so that rare levels are not crowded out."""
    keys = [preference_key(oracle, task, text, kind) for text, _ in candidates]
    by_level: dict[str, list[tuple[bool, float, Pair]]] = {level: [] for level in RATING_LEVELS}
    for i, j in itertools.combinations(range(len(candidates)), 2):
        coin = rng.random() < 0.5  # drawn for every pair, so one pair's order does not shift the next's
        hi, lo = (i, j) if keys[i] > keys[j] or (keys[i] == keys[j] and coin) else (j, i)
        (s_hi, _), (s_lo, _) = keys[hi], keys[lo]
        level = rating_level(s_hi, s_lo) if s_hi != s_lo else RATING_LEVELS[-1]
        pair = Pair(task.prompt, candidates[hi][0], candidates[lo][0], level, s_hi - s_lo, keys[i] == keys[j])
        # Pairs of two model samples first, then a sample against a written response: the reward
        # model must judge the policy's own outputs, whose mistakes (an answer to another question,
        # a garbled name) are not the ones the distractors make.
        written = 2 - candidates[hi][1] - candidates[lo][1]
        by_level[level].append((written, rng.random(), pair))
    queues = [sorted(by_level[level], key=lambda e: e[:2]) for level in RATING_LEVELS if by_level[level]]
    rng.shuffle(queues)  # no level is always first in line when max_pairs is small
    picked = []
    for round_ in itertools.zip_longest(*queues):
        picked += [entry[2] for entry in round_ if entry is not None]
    return picked[:max_pairs]


def build_preference_pairs(model: Llama | None, tokenizer: Tokenizer, oracle: Oracle, tasks: Sequence[Task],
                           kind: str, n_samples: int = 4, temperature: float = 1.0, seed: int = 0,
                           max_pairs_per_task: int = 6, max_new_tokens: int = 64, batch_size: int = 64,
                           progress: bool = False) -> list[Pair]:
    """Preference pairs for the ``kind`` reward model, in task order; the same arguments give the
    same pairs. ``model=None`` (or ``n_samples=0``) builds them from the reference and the
    distractors alone. Which tasks a reward model sees is the caller's choice (see
    :func:`reward_tasks`)."""
    _check_kind(kind)
    if max_pairs_per_task < 1:
        raise ValueError(f"max_pairs_per_task must be >= 1, got {max_pairs_per_task}")
    tasks = list(tasks)
    if model is not None and n_samples > 0:
        samples = sample_responses(model, tokenizer, [t.prompt for t in tasks], n_samples=n_samples,
                                   temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   seed=seed, progress=progress)
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
        pairs += _task_pairs(oracle, task, list(first.items()), kind, rng, max_pairs_per_task)
    return pairs


def reward_tasks(chat: Sequence[Task], safety: Sequence[Task], kind: str, n: int) -> list[Task]:
    """About ``n`` prompts for a ``kind`` reward model. Helpfulness: harmless chat tasks and a
    fifth borderline ones (harmless requests that only look risky). Safety: off-limits and
    borderline requests, and a third harmless chat tasks, so that refusing those counts as worse."""
    _check_kind(kind)
    if kind == "helpfulness":
        borderline = [t for t in safety if t.safety == "borderline"][:n // 5]
        return list(chat[:n - len(borderline)]) + borderline
    benign = list(chat[:n // 3])
    return list(safety[:n - len(benign)]) + benign


def level_counts(pairs: Sequence[Pair]) -> dict[str, int]:
    return {level: sum(p.rating == level for p in pairs) for level in RATING_LEVELS}


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


# ---------------------------------------------------------------------------------- batches
def encode_conversation(tokenizer: Tokenizer, prompt: str, response: str, max_len: int) -> tuple[list[int], list[bool]]:
    """Chat-template ids of a one-turn conversation and its response mask (the response tokens and
    the ``<|end|>`` after them). Longer than ``max_len``: the prompt's start is cut after BOS, so
    the question at its end and the response stay whole."""
    ids, mask = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": response}])
    if len(ids) > max_len:
        cut = len(ids) - max_len
        ids, mask = ids[:1] + ids[1 + cut:], mask[:1] + mask[1 + cut:]
    return ids, mask


@dataclass(frozen=True)
class EncodedPair:
    chosen: tuple[list[int], list[bool]]
    rejected: tuple[list[int], list[bool]]
    margin: float
    rating: str


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[Pair], max_len: int,
                 margins: str | None = "small") -> list[EncodedPair]:
    """Token ids and response masks of both sides of every pair; ``margins=None`` sets every margin to 0."""
    out = []
    for p in pairs:
        margin = 0.0 if margins is None else margin_for(p.rating, margins)
        out.append(EncodedPair(encode_conversation(tokenizer, p.prompt, p.chosen, max_len),
                               encode_conversation(tokenizer, p.prompt, p.rejected, max_len), margin, p.rating))
    return out


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch of ``b`` pairs: rows ``[:b]`` are the chosen responses, ``[b:]`` the
    rejected ones. ``input_ids``, ``attention_mask``, ``response_mask`` ``(2b, t)``; ``margin (b,)``."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    t = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), t), dtype=torch.long)
    response_mask = torch.zeros((len(rows), t), dtype=torch.bool)
    for i, (ids, mask) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention_mask[i, :len(ids)] = 1
        response_mask[i, :len(ids)] = torch.tensor(mask)
    margin = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask,
            "margin": margin}


class PairBatches:
    """Endless batches of ``batch_size`` pairs (:func:`collate_pairs`), a fresh permutation of the
    pairs every epoch. Draw ``position`` is a pure function of ``(seed, position)``, so the state
    to resume is one number."""

    def __init__(self, pairs: Sequence[EncodedPair], batch_size: int, seed: int = 0, pad_id: int = 0,
                 position: int = 0) -> None:
        if not pairs:
            raise ValueError("pairs must not be empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pairs, self.batch_size, self.seed, self.pad_id = list(pairs), batch_size, seed, pad_id
        self.position = position

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        epoch, i = divmod(self.position, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))
        self.position += 1
        return collate_pairs([self.pairs[k] for k in order[i * self.batch_size:(i + 1) * self.batch_size]],
                             self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "batch_size": self.batch_size,
                "n_pairs": len(self.pairs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in (("seed", self.seed), ("batch_size", self.batch_size), ("n_pairs", len(self.pairs))):
            if state[key] != value:
                raise ValueError(f"cannot resume the pair stream: checkpoint has {key}={state[key]}, this run has "
                                 f"{key}={value}; rerun with the same pairs and settings or start a fresh run")
        self.position = int(state["position"])


def reward_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The trainer's ``loss_fn``: ranking loss of a :func:`collate_pairs` batch (count = pairs)."""
    rewards = model(batch["input_ids"], batch["attention_mask"]).float()
    chosen, rejected = rewards.chunk(2)
    loss = ranking_loss(chosen, rejected, batch["margin"])
    return loss, {"count": chosen.shape[0], "tokens": int(batch["attention_mask"].sum()),
                  "accuracy": (chosen > rejected).float().mean().detach()}


# ---------------------------------------------------------------------------------- save, load
def save_reward_model(rm: LlamaRewardModel, directory: str | Path) -> Path:
    """``config.json`` (LlamaConfig's fields) and ``model.safetensors`` (the model's own tensor
    names, ``score.weight`` included), both written atomically."""
    directory = Path(directory)
    save_tensors(directory / WEIGHTS_FILE, rm.state_dict(), metadata={"format": "pt", "head": "reward"})
    save_json(directory / CONFIG_FILE, rm.config.to_dict())
    return directory


def load_reward_model(directory: str | Path, device: str | torch.device | None = None) -> LlamaRewardModel:
    """Load what :func:`save_reward_model` wrote; a missing, unexpected or mis-shaped tensor raises
    a ``ValueError`` naming it."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(f"{directory}: no {path.name} (a reward model directory has {CONFIG_FILE} and "
                             f"{WEIGHTS_FILE})")
    with safe_open(str(weights_path), framework="pt") as f:
        head = (f.metadata() or {}).get("head")
    if head != "reward":
        raise ValueError(f"{weights_path}: not a reward model (metadata head={head!r}, expected 'reward')")
    config = LlamaConfig.from_dict(json.loads(config_path.read_text()))
    state = load_file(str(weights_path))
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten at once
        rm = LlamaRewardModel(config, seed=None)
    load_state_dict_checked(rm, state, str(directory))
    rm = rm.to(dtype=next(iter(state.values())).dtype)
    return (rm.to(device) if device is not None else rm).eval()


# ---------------------------------------------------------------------------------- training
def train_reward_model(init_lm_dir: str | Path, tokenizer: Tokenizer, pairs: Sequence[Pair], out_dir: str | Path,
                       epochs: float = 1.0, lr: float = 1e-4, use_margin: bool = True, margins: str = "small",
                       batch_size: int = 16, seed: int = 0, val_pairs: Sequence[Pair] | None = None,
                       device: str = "auto", progress: bool = True) -> LlamaRewardModel:
    """Train a reward model from the language model in ``init_lm_dir`` (the SFT model) on ``pairs``
    with the shared :class:`~minillama.train.Trainer`, and save it to ``<out_dir>/model``.

    Llama 2's recipe, scaled down: one epoch, a learning rate an order of magnitude below
    pretraining's, 3% warmup, cosine decay to 10%. ``use_margin=False`` trains without margins
    (the plain Bradley-Terry loss). Rerunning with the same ``out_dir`` resumes."""
    if not pairs:
        raise ValueError("pairs must not be empty")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    rm = LlamaRewardModel.from_lm(Llama.from_pretrained(init_lm_dir, dtype=torch.float32))
    max_len = rm.config.max_seq_len
    train = encode_pairs(tokenizer, pairs, max_len, margins if use_margin else None)
    steps = max(1, math.ceil(epochs * len(train) / batch_size))
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, round(0.03 * steps)) if steps > 1 else 0,
                         eval_interval=0, checkpoint_interval=max(1, steps // 4), seed=seed, device=device,
                         progress=progress)
    val = encode_pairs(tokenizer, val_pairs or [], max_len, margins if use_margin else None)

    def val_fn(model: nn.Module) -> dict[str, float]:
        return evaluate_pairs(model, val, batch_size, tokenizer.pad_id)

    trainer = Trainer(rm, reward_loss, PairBatches(train, batch_size, seed, tokenizer.pad_id), config, out_dir,
                      val_fn if val else None)
    trainer.fit()
    save_reward_model(rm, Path(out_dir) / MODEL_DIR)
    return rm.eval()


@torch.no_grad()
def evaluate_pairs(rm: nn.Module, pairs: Sequence[EncodedPair], batch_size: int = 32,
                   pad_id: int = 0) -> dict[str, float]:
    """Mean ranking loss and accuracy over encoded pairs (the trainer's ``val_fn``)."""
    device = next(rm.parameters()).device
    loss_sum = correct = 0.0
    for start in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(pairs[start:start + batch_size], pad_id).items()}
        loss, metrics = reward_loss(rm, batch)
        loss_sum += float(loss) * metrics["count"]
        correct += float(metrics["accuracy"]) * metrics["count"]
    return {"val_loss": loss_sum / len(pairs), "val_accuracy": correct / len(pairs)}


# ---------------------------------------------------------------------------------- scoring
@torch.no_grad()
def raw_rewards(rm: LlamaRewardModel, tokenizer: Tokenizer, prompts: Sequence[str], responses: Sequence[str],
                batch_size: int = 32) -> torch.Tensor:
    """The reward model's raw score of each ``(prompt, response)``: ``(n,)`` float32 on the CPU."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}")
    was_training = rm.training
    rm.eval()
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [encode_conversation(tokenizer, p, r, rm.config.max_seq_len)
                    for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
            t = max(len(ids) for ids, _ in rows)
            ids = torch.full((len(rows), t), tokenizer.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), t), dtype=torch.long)
            for i, (row, _) in enumerate(rows):
                ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
            out.append(rm(ids.to(rm.device), mask.to(rm.device)).float().cpu())
    finally:
        rm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def pair_accuracy(rm: LlamaRewardModel, tokenizer: Tokenizer, pairs: Sequence[Pair],
                  batch_size: int = 32) -> dict[str, Any]:
    """How often the reward model ranks the chosen response above the rejected one: overall and per
    rating level (a tie counts as half right, so an untrained model with a zero head scores 0.5).
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
    by_level = {}
    for level in RATING_LEVELS:
        rows = torch.tensor([p.rating == level for p in pairs])
        if rows.any():
            by_level[level] = {"accuracy": float(right[rows].mean()), "n": int(rows.sum()),
                               "ceiling": float(best[rows].mean())}
    return {"accuracy": float(right.mean()), "n": len(pairs), "by_level": by_level, "ceiling": float(best.mean()),
            "mean_reward_gap": float((chosen - rejected).mean())}


def combine_scores(helpfulness: torch.Tensor, safety: torch.Tensor, is_risky: torch.Tensor | Sequence[bool],
                   threshold: float = SAFETY_THRESHOLD) -> torch.Tensor:
    """Llama 2's rule, ``(n,), (n,), (n,) -> (n,)``: the safety score where the prompt is risky or
    the safety score is below ``threshold``, the helpfulness score everywhere else."""
    is_risky = torch.as_tensor(is_risky, dtype=torch.bool)
    if not helpfulness.shape == safety.shape == is_risky.shape:
        raise ValueError(f"helpfulness, safety and is_risky must have the same shape, got "
                         f"{tuple(helpfulness.shape)}, {tuple(safety.shape)} and {tuple(is_risky.shape)}")
    return torch.where(is_risky | (safety < threshold), safety, helpfulness)


def is_risky_prompt(task: Task) -> bool:
    """Whether Llama 2's rule reads the safety score first: the prompt comes from the safety set
    (an off-limits or a borderline request)."""
    return task.safety in ("unsafe", "borderline")


class RewardScorer:
    """The two reward models as one scorer. ``scores`` gives each model's probability that a
    response is good, ``sigmoid(raw reward)``: the scale on which Llama 2's 0.15 safety threshold
    is set. ``combined`` applies :func:`combine_scores`."""

    def __init__(self, helpfulness_rm: LlamaRewardModel, safety_rm: LlamaRewardModel, tokenizer: Tokenizer,
                 batch_size: int = 32, threshold: float = SAFETY_THRESHOLD) -> None:
        self.helpfulness_rm, self.safety_rm, self.tokenizer = helpfulness_rm, safety_rm, tokenizer
        self.batch_size, self.threshold = batch_size, threshold

    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(helpfulness (n,), safety (n,))``, each in (0, 1)."""
        help_ = raw_rewards(self.helpfulness_rm, self.tokenizer, prompts, responses, self.batch_size)
        safe = raw_rewards(self.safety_rm, self.tokenizer, prompts, responses, self.batch_size)
        return help_.sigmoid(), safe.sigmoid()

    def combined(self, prompts: Sequence[str], responses: Sequence[str], is_risky: Sequence[bool]) -> torch.Tensor:
        help_, safe = self.scores(prompts, responses)
        return combine_scores(help_, safe, is_risky, self.threshold)

    @classmethod
    def load(cls, helpfulness_dir: str | Path, safety_dir: str | Path, tokenizer: Tokenizer,
             device: str | torch.device | None = None, batch_size: int = 32) -> RewardScorer:
        return cls(load_reward_model(helpfulness_dir, device), load_reward_model(safety_dir, device), tokenizer,
                   batch_size)


# ---------------------------------------------------------------------------------- report
def plot_accuracy(metrics: dict[str, dict[str, Any]], path: str | Path, title: str = "reward model") -> Figure:
    """Bars of accuracy per rating level, one group per entry of ``metrics`` (e.g. train, val);
    written to ``path`` (png) atomically."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(len(metrics), 1)
    for k, (name, result) in enumerate(metrics.items()):
        levels = [level for level in RATING_LEVELS if level in result["by_level"]]
        xs = [RATING_LEVELS.index(level) + (k - (len(metrics) - 1) / 2) * width for level in levels]
        ax.bar(xs, [result["by_level"][level]["accuracy"] for level in levels], width,
               label=f"{name} (all: {result['accuracy']:.2f})")
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(range(len(RATING_LEVELS)), [level.replace(" / ", "/\n") for level in RATING_LEVELS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("pair accuracy")
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    return fig


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama reward",
        description="Build oracle-labelled preference pairs from the SFT model's samples, the references and the "
                    "distractors, and train a helpfulness or safety reward model on them (Llama 2's ranking loss "
                    "with a margin). Writes OUT/pairs_{train,val}.jsonl, OUT/model (config.json + "
                    "model.safetensors), OUT/metrics.json and OUT/accuracy.png. Rerunning resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--kind", required=True, choices=REWARD_KINDS, help="which reward model")
    p.add_argument("--sft", required=True, type=Path,
                   help="the SFT model directory, or the SFT run directory holding model/ (the reward model starts "
                        "from it)")
    p.add_argument("--tokenizer", type=Path,
                   help="tokenizer.model, or the directory holding it (default: the one `minillama sft` saved with "
                        "the SFT model)")
    p.add_argument("--data", required=True, type=Path,
                   help="a `minillama data` folder (chat_{train,val}.jsonl, safety_{train,val}.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--prompts", type=int, default=2000, help="training prompts to build pairs from")
    p.add_argument("--val-prompts", type=int, default=300, help="validation prompts to build pairs from")
    p.add_argument("--samples", type=int, default=4, help="SFT model samples per prompt among the candidates")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of those samples")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest sample, in tokens")
    p.add_argument("--pairs-per-task", type=int, default=6, help="most pairs kept per prompt")
    p.add_argument("--margins", default="small", choices=[*sorted(MARGINS), "none"],
                   help="Llama 2's margin table, or none (plain ranking loss)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, the pair choice and the data order")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _write_pairs(args: argparse.Namespace, tokenizer: Tokenizer, splits: Sequence[str]) -> None:
    """Build the pairs of ``splits`` (from the SFT model's samples, the references and the
    distractors) and write ``OUT/pairs_<split>.jsonl``."""
    chat = {split: read_tasks(args.data / f"chat_{split}.jsonl") for split in splits}
    safety = {split: read_tasks(args.data / f"safety_{split}.jsonl") for split in splits}
    oracle = Oracle([task for split in splits for task in (*chat[split], *safety[split])])
    sft = None
    if args.samples > 0:
        sft = Llama.from_pretrained(args.sft, dtype=torch.float32).to(DistEnv().device(args.device))
    for split in splits:
        n = args.prompts if split == "train" else args.val_prompts
        tasks = reward_tasks(chat[split], safety[split], args.kind, n)
        pairs = build_preference_pairs(sft, tokenizer, oracle, tasks, args.kind, args.samples, args.temperature,
                                       args.seed if split == "train" else args.seed + 1, args.pairs_per_task,
                                       args.max_new_tokens, progress=not args.no_progress)
        save_pairs(args.out / f"pairs_{split}.jsonl", pairs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.sft = resolve_model_dir(args.sft)
    tokenizer = Tokenizer.load(args.tokenizer or args.sft)
    progress = not args.no_progress
    # Pairs already written are reused: a rerun after a crash in training does not sample again.
    missing = [split for split in ("train", "val") if not (args.out / f"pairs_{split}.jsonl").is_file()]
    if missing:
        _write_pairs(args, tokenizer, missing)
    train_pairs, val_pairs = (load_pairs(args.out / f"pairs_{split}.jsonl") for split in ("train", "val"))
    margins = None if args.margins == "none" else args.margins
    rm = train_reward_model(args.sft, tokenizer, train_pairs, args.out, args.epochs, args.lr, margins is not None,
                            margins or "small", args.batch_size, args.seed, val_pairs, args.device, progress)
    rng = random.Random(args.seed)
    train_sample = rng.sample(train_pairs, min(len(train_pairs), len(val_pairs)))
    results = {"train": pair_accuracy(rm, tokenizer, train_sample), "val": pair_accuracy(rm, tokenizer, val_pairs)}
    metrics = {"kind": args.kind, "margins": args.margins, "pairs": {"train": level_counts(train_pairs),
                                                                     "val": level_counts(val_pairs)}, **results}
    save_json(args.out / "metrics.json", metrics)
    plot_accuracy(results, args.out / "accuracy.png", f"{args.kind} reward model: pair accuracy by rating level")
    print(f"{args.kind} reward model: pair accuracy {results['val']['accuracy']:.3f} on {len(val_pairs)} val pairs "
          f"(train sample {results['train']['accuracy']:.3f}); model in {args.out / MODEL_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
