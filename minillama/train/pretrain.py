"""``minillama pretrain``: next-token prediction on a directory of token files.

    minillama pretrain --preset tiny --data data/tinyworld --out runs/tiny
    torchrun --standalone --nproc_per_node 2 -m minillama.train.pretrain --data ... --out ...

Rerunning the same command continues from the latest checkpoint in ``--out``. The trained model
is written to ``<out>/model`` (``config.json`` + ``model.safetensors``, Hugging Face's format):
load it with ``minillama.Llama.from_pretrained("<out>/model")`` (or transformers'
``LlamaForCausalLM.from_pretrained``).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import save_json
from ..config import ATTN_BACKENDS, PRESETS, LlamaConfig
from ..model import Llama
from .data import WindowBatches, open_split, read_meta
from .ddp import DistEnv, all_reduce_sum, barrier, setup, teardown
from .loop import PRECISIONS, TrainConfig, Trainer
from .state import CHECKPOINTS

IGNORE_INDEX = -100
# Fields that may differ when a run is resumed: they change speed or limits, not the model.
RUNTIME_FIELDS = ("attn_backend", "max_batch_size")


def next_token_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mean cross-entropy of predicting ``batch[:, 1:]`` from ``batch[:, :-1]``; ``batch (b, t+1)``.

    Targets equal to ``IGNORE_INDEX`` (-100) carry no loss; ``count`` is the number that do.
    A batch with none gives 0 with count 0, so it adds nothing to the step's mean."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)  # (b, t, v)
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    count = (targets != IGNORE_INDEX).sum()
    return total / count.clamp(min=1), {"count": count, "tokens": inputs.numel()}


@torch.no_grad()
def evaluate_lm(model: nn.Module, tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int,
                seed: int = 1234, env: DistEnv = DistEnv()) -> dict[str, float]:
    """Mean next-token loss (and perplexity) over ``n_batches`` fixed random windows of ``tokens``.

    The same windows every call (a fresh source from ``seed``), split across ranks and summed,
    so the number is comparable across evaluations and across process counts."""
    device = next(model.parameters()).device
    windows = WindowBatches(tokens, batch_size, seq_len, seed, env.rank, env.world_size)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for _ in range(n_batches):
        loss, metrics = next_token_loss(model, next(windows).to(device))
        sums += torch.stack([loss.double() * metrics["count"], metrics["count"].double()])
    loss_sum, count = all_reduce_sum(sums, env).tolist()
    mean = loss_sum / count
    return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama pretrain",
        description="Pretrain a Llama model on token files (train.bin, val.bin, meta.json). Rerunning with the "
                    "same --out resumes from its latest checkpoint. The final model is written to OUT/model, "
                    "loadable with minillama.Llama.from_pretrained(OUT/model). Several processes: "
                    "torchrun --standalone --nproc_per_node N -m minillama.train.pretrain ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="directory with train.bin, val.bin (flat uint16/int32 token ids) and meta.json (vocab_size)")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory: config.json, metrics.jsonl, loss.png, checkpoints/, model/")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model shape (LlamaConfig preset)")
    p.add_argument("--dim", type=int, help="override the preset's model width")
    p.add_argument("--n-layers", type=int, help="override the preset's number of blocks")
    p.add_argument("--n-heads", type=int, help="override the preset's number of query heads")
    p.add_argument("--n-kv-heads", type=int, help="override the preset's number of key/value heads (GQA)")
    p.add_argument("--attn-backend", choices=ATTN_BACKENDS, help="attention implementation (default: preset's)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps in the whole run (resuming counts on)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="sequences per micro-batch over all processes together (split evenly across ranks)")
    p.add_argument("--seq-len", type=int, help="tokens per training sequence (default: the preset's max_seq_len)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches accumulated per optimizer step (tokens/step = batch * accum * seq_len)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (after warmup)")
    p.add_argument("--warmup", type=int, default=20, help="linear warmup steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays the lr to this fraction of the peak")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on weight matrices")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm; 0 disables clipping")
    p.add_argument("--eval-interval", type=int, default=50, help="validate every N steps (and at the end); 0: end only")
    p.add_argument("--eval-batches", type=int, default=8, help="batches of val.bin per validation")
    p.add_argument("--checkpoint-interval", type=int, default=50,
                   help="checkpoint every N steps (and at the end); 0: end only")
    p.add_argument("--keep-last", type=int, default=2, help="checkpoints kept on disk (older ones are deleted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the data order and every generator")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: bf16 autocast on GPU, fp32 on CPU")
    p.add_argument("--threads", type=int,
                   help="CPU threads per process (default: torch's choice; 1 is often fastest on a busy machine)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--fresh", action="store_true",
                   help="start again from step 0: delete OUT's checkpoints and metrics.jsonl instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def model_config_for(args: argparse.Namespace, vocab_size: int) -> LlamaConfig:
    overrides = {k: v for k, v in (("dim", args.dim), ("n_layers", args.n_layers), ("n_heads", args.n_heads),
                                   ("n_kv_heads", args.n_kv_heads), ("attn_backend", args.attn_backend))
                 if v is not None}
    if args.n_heads is not None and args.n_kv_heads is None:
        overrides["n_kv_heads"] = args.n_heads  # the preset's GQA ratio may not divide the new head count
    max_seq_len = max(PRESETS[args.preset].get("max_seq_len", 256), args.seq_len or 0)
    return LlamaConfig.from_preset(args.preset, vocab_size=vocab_size, max_seq_len=max_seq_len, **overrides)


def check_same_model(saved_path: Path, config: LlamaConfig) -> None:
    saved = LlamaConfig.load(saved_path).to_dict()
    new = config.to_dict()
    diff = {k: (saved[k], new[k]) for k in new if k not in RUNTIME_FIELDS and saved[k] != new[k]}
    if diff:
        raise ValueError(f"{saved_path} describes a different model (saved, requested): {diff}; "
                         f"use the same flags to resume, or --fresh / another --out to start a new run")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    meta = read_meta(args.data)
    config = model_config_for(args, meta["vocab_size"])
    seq_len = args.seq_len or config.max_seq_len
    train_config = TrainConfig(
        steps=args.steps, lr=args.lr, warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, grad_accum=args.grad_accum,
        eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval, keep_last=args.keep_last,
        seed=args.seed, precision=args.precision, compile=args.compile, device=args.device,
        resume=not args.fresh, progress=not args.no_progress)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    env = setup(args.device)
    try:
        out = args.out
        if env.is_main:
            if args.fresh:
                shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
                (out / "metrics.jsonl").unlink(missing_ok=True)
            elif (out / "config.json").is_file():
                check_same_model(out / "config.json", config)
            save_json(out / "config.json", config.to_dict())
        barrier(env)  # the other ranks wait for rank 0's --fresh clean-up
        train, val = open_split(args.data, "train"), open_split(args.data, "val")
        batches = WindowBatches(train, args.batch_size, seq_len, args.seed, env.rank, env.world_size)

        def val_fn(model: nn.Module) -> dict[str, float]:
            return evaluate_lm(model, val, args.batch_size, seq_len, args.eval_batches, args.seed + 1, env)

        model = Llama(config, seed=args.seed)
        trainer = Trainer(model, next_token_loss, batches, train_config, out, val_fn, env)
        records = trainer.fit()
        if env.is_main:
            model.save_pretrained(out / "model")
            summarize(records, out)
    finally:
        teardown()
    return 0


def summarize(records: list[dict[str, Any]], out: Path) -> None:
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    if not train:
        print(f"nothing to do: {out} is already trained to the requested steps", file=sys.stderr)
        return
    speed = float(np.median([r["tokens_per_s"] for r in train]))
    line = f"step {train[-1]['step']}: train loss {train[-1]['loss']:.4f}"
    if val:
        line += f", val loss {val[-1]['val_loss']:.4f}"
    print(f"{line}; median {speed:,.0f} tokens/s; model in {out / 'model'}")


if __name__ == "__main__":
    sys.exit(main())
