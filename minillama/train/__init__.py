"""One training loop for every stage: pretraining, SFT, reward modelling, rejection sampling, DPO.

* :mod:`.schedule`  linear warmup + cosine decay to 10% (Llama 2)
* :mod:`.optim`     AdamW with weight decay on weight matrices only
* :mod:`.data`      token files (memmap) and resumable, rank-sharded random windows
* :mod:`.packing`   whole chats packed into rows (SFT, rejection sampling)
* :mod:`.pairs`     preference-pair batches (reward models, DPO)
* :mod:`.state`     checkpoints (a model folder + optimizer, generators, position) for exact resume
* :mod:`.ddp`       torchrun / DistributedDataParallel plumbing
* :mod:`.metrics`   metrics.jsonl;  :mod:`.plots` loss.png
* :mod:`.loop`      :class:`Trainer`, :class:`TrainConfig`, :func:`mean_over_batches`
"""

from .data import BatchSource, WindowBatches, open_split, save_token_dataset, token_dtype, write_tokens
from .ddp import DistEnv
from .loop import NonFiniteLossError, TrainConfig, Trainer, mean_over_batches
from .optim import build_adamw, split_decay_params
from .schedule import CosineSchedule
from .state import latest_checkpoint, load_checkpoint

__all__ = ["BatchSource", "CosineSchedule", "DistEnv", "NonFiniteLossError", "TrainConfig", "Trainer",
           "WindowBatches", "build_adamw", "latest_checkpoint", "load_checkpoint", "mean_over_batches",
           "open_split", "save_token_dataset", "split_decay_params", "token_dtype", "write_tokens"]
