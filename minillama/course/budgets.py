"""Per-preset training budgets of the course pipeline: tiny fits in about 20 minutes on a 2-core CPU.

rm_samples: the reward models learn to judge the policy's own answers from pairs of its samples
(8 samples give most prompts a pair of them at each rating level). rs_threshold_prompts: the
validation prompts whose samples choose the reward a kept answer must clear. sft_uneven: the share
of flawed demonstrations the simulated annotators write (minillama.data.annotators).
rs_temperature: with the tiny
reward models the pick among 8 samples is worth more to the oracle at 0.7 than at 1.0.
"""

from __future__ import annotations

from typing import Any

BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": dict(steps=320, batch_size=16, seq_len=256, lr=2e-3, warmup=30, vocab_size=2048, chars=3_000_000,
                 sft_examples=6000, sft_lr=1e-3, sft_uneven=0.3, rm_prompts=600, rm_samples=8, rm_lr=5e-4,
                 rs_prompts=600, rs_k=8, rs_lr=3e-4, rs_temperature=0.7, rs_threshold_prompts=96,
                 study_prompts=48,
                 dpo_pairs_per_prompt=4, dpo_lr=1e-4, dpo_beta=0.1, dpo_nll_alpha=0.2, eval_chat=1000, eval_safety=500),
    "small": dict(steps=2000, batch_size=32, seq_len=1024, lr=6e-4, warmup=100, vocab_size=8192, chars=30_000_000,
                  sft_examples=20000, sft_lr=3e-4, sft_uneven=0.3, rm_prompts=2000, rm_samples=8, rm_lr=1e-4,
                  rs_prompts=2000, rs_k=8, rs_lr=1e-4, rs_temperature=1.0, rs_threshold_prompts=256,
                  study_prompts=128,
                  dpo_pairs_per_prompt=4, dpo_lr=3e-5, dpo_beta=0.1, dpo_nll_alpha=0.2, eval_chat=1000, eval_safety=500),
}
