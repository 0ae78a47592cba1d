"""Judging responses: the reward models' scores, combined by Llama 2's rule, and the oracle in
their place.

Llama 2 reads two reward models. Where the prompt is risky, or the safety model finds a response
unsafe (a score below 0.15), the safety score decides; everywhere else the helpfulness score does
(:func:`combine_scores`). :class:`RewardScorer` and :class:`OracleJudge` offer the same
``combined(prompts, responses, is_risky)``, so rejection sampling runs with either judge: the
reward models (the recipe) or a perfect judge (its ceiling).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..chat import chat_batch
from ..checkpoint import load_model
from ..data import Oracle, Task
from ..data.oracle import SAFETY_THRESHOLD
from ..model import LlamaRewardModel
from ..sequences import eval_mode
from ..tokenizer import Tokenizer


@torch.no_grad()
def raw_rewards(rm: LlamaRewardModel, tokenizer: Tokenizer, prompts: Sequence[str], responses: Sequence[str],
                batch_size: int = 32) -> torch.Tensor:
    """The reward model's raw score of each ``(prompt, response)``, in batches of ``batch_size`` in
    the given order: ``(n,)`` float32 on the CPU."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}")
    out = []
    with eval_mode(rm):
        for start in range(0, len(prompts), batch_size):
            batch = chat_batch(tokenizer, prompts[start:start + batch_size], responses[start:start + batch_size],
                               max_len=rm.config.max_seq_len)
            out.append(rm(batch["input_ids"].to(rm.device), batch["attention_mask"].to(rm.device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


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
    """The two reward models as one judge. ``scores`` gives each model's probability that a
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
        """The reward models in two model folders (or run folders with ``model/`` in them)."""
        helpfulness, safety = (load_model(d, kind=LlamaRewardModel).eval() for d in (helpfulness_dir, safety_dir))
        if device is not None:
            helpfulness, safety = helpfulness.to(device), safety.to(device)
        return cls(helpfulness, safety, tokenizer, batch_size)


class OracleJudge:
    """The oracle in the reward models' place: the combined score of a perfect judge, with the same
    ``combined(prompts, responses, is_risky)`` call as :class:`RewardScorer`.

    Not part of the recipe (nobody has an oracle): it measures the recipe's ceiling. What rejection
    sampling gains with this judge is what the fine-tuning on kept samples can buy at all; what it
    gains with the reward models is that, less the reward models' error."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def combined(self, prompts: Sequence[str], responses: Sequence[str],
                 is_risky: Sequence[bool] | None = None) -> torch.Tensor:
        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and "
                             f"{len(responses)}")
        # The oracle knows which prompts are risky; is_risky is taken for the scorer's signature only.
        return torch.tensor([self.oracle.combined(p, r).score for p, r in zip(prompts, responses)],
                            dtype=torch.float32)
