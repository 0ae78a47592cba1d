"""Post-training: the Llama 2 recipe after pretraining, each stage scored by the TinyWorld oracle.

* :mod:`.sampling`  batched chat answers on the KV cache (greedy or sampled, seeded per response)
  and ``log p(response | prompt)``
* :mod:`.sft`       supervised fine-tuning: answer-only loss, packed examples, ``minillama sft``
* :mod:`.evaluate`  the oracle's metrics with bootstrap intervals, paired stage comparisons,
  the stage table

The stage modules (``sft`` here; reward, rejection and DPO beside it) are command modules, run as
``minillama <stage>`` or ``python -m minillama.post.<stage>``; import them by their full name
(``from minillama.post.sft import run_sft``) so that ``-m`` does not find them imported already.
"""

from .evaluate import (METRICS, bootstrap_ci, evaluate_model, evaluate_responses, paired_difference,
                       per_prompt_scores, stage_table, summary)
from .sampling import (chat_prompt_ids, chat_response_batch, inverse_cdf_sample, response_logprobs,
                       sample_responses, sequence_logprobs)

__all__ = [
    "METRICS", "bootstrap_ci", "chat_prompt_ids", "chat_response_batch", "evaluate_model", "evaluate_responses",
    "inverse_cdf_sample", "paired_difference", "per_prompt_scores", "response_logprobs", "sample_responses",
    "sequence_logprobs", "stage_table", "summary",
]
