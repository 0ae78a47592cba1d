"""Evaluation: how good is a model, and by whose judgement.

* :mod:`.oracle`   every stage scored by the TinyWorld oracle: five metrics with bootstrap
  intervals, paired comparisons of two stages, the stage table
* :mod:`.rewards`  the reward models' scores combined by Llama 2's rule, and the oracle as a judge
* :mod:`.probes`   probes of a pretrained model: fact cloze, copying, the unigram baseline, samples
"""

from .oracle import METRICS, bootstrap_ci, evaluate_model, evaluate_responses, paired_difference, stage_table, summary
from .rewards import OracleJudge, RewardScorer, combine_scores, is_risky_prompt, raw_rewards

__all__ = ["METRICS", "OracleJudge", "RewardScorer", "bootstrap_ci", "combine_scores", "evaluate_model",
           "evaluate_responses", "is_risky_prompt", "paired_difference", "raw_rewards", "stage_table", "summary"]
