"""The stages of the Llama 2 recipe, siblings that import nothing of each other: each exposes one
typed ``run_<stage>(...) -> metrics`` and a thin ``main(argv)`` (``minillama <stage>``).

* :mod:`.pretrain`   next-token prediction on token files
* :mod:`.sft`        supervised fine-tuning: answer-only loss, packed chats
* :mod:`.reward`     helpfulness and safety reward models: oracle-labelled pairs, ranking loss with margin
* :mod:`.rejection`  rejection sampling: best of K by the reward models, fine-tuned on, round after round
* :mod:`.dpo`        direct preference optimisation on the policy's own samples ranked by the oracle

What two stages share lives a floor below: task files in :mod:`minillama.data`, batches and the
training loop in :mod:`minillama.train`, scoring in :mod:`minillama.evaluate`, model folders in
:mod:`minillama.checkpoint`.
"""
