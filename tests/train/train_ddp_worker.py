"""Run under torchrun by test_train_ddp.py (and in-process by the test, as the 1-rank reference):
a few steps of a loss that ignores every target divisible by 3, so each rank and micro-batch
counts a different number of tokens. Then, in the same launch (processes are slow to start on a
busy 2-core machine), ``minillama pretrain`` with the arguments after OUT, if any.

    python -m torch.distributed.run --standalone --nproc_per_node 2 train_ddp_worker.py OUT [PRETRAIN ARGS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the suite's helpers module

from minillama.stages.pretrain import main as pretrain_main  # noqa: E402
from minillama.train import DistEnv, Trainer, WindowBatches  # noqa: E402
from minillama.train.ddp import setup, teardown  # noqa: E402
from train_helpers import new_model, token_stream, train_config  # noqa: E402


def loss_without_multiples_of_3(model, batch):
    tokens = batch["tokens"]
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] % 3 == 0, -100)
    logits = model(tokens[:, :-1])
    count = (targets != -100).sum()
    total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return total / count, {"count": count, "tokens": targets.numel()}


def run(out: Path, env: DistEnv) -> None:
    batches = WindowBatches(token_stream(4000), batch_size=4, seq_len=16, seed=0, rank=env.rank,
                            world_size=env.world_size)
    config = train_config(steps=4, eval_interval=0, checkpoint_interval=0)
    trainer = Trainer(new_model(), loss_without_multiples_of_3, batches, config, out, env=env)
    trainer.fit()
    save_file(dict(trainer.model.state_dict()), str(out / f"final_rank{env.rank}.safetensors"))


if __name__ == "__main__":
    env = setup("cpu")
    try:
        run(Path(sys.argv[1]), env)
        if len(sys.argv) > 2:
            pretrain_main(sys.argv[2:])  # joins the same process group
    finally:
        teardown()
