"""``minillama pretrain``: next-token prediction on a folder of token files.

    minillama pretrain --preset tiny --data runs/course/tokens --out runs/tiny
    torchrun --standalone --nproc_per_node 2 -m minillama pretrain --data ... --out ...

Rerunning the same command continues from the latest checkpoint in ``--out``. The trained model
is written to ``<out>/model`` (a model folder: ``config.json`` + ``model.safetensors``, Hugging
Face's format): load it with ``minillama.load_model("<out>/model")`` (or transformers'
``LlamaForCausalLM.from_pretrained``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attention import ATTN_BACKENDS
from ..checkpoint import save_model
from ..config import PRESETS, LlamaConfig
from ..model import Llama
from ..sequences import lm_loss
from ..train import DistEnv, TrainConfig, Trainer, WindowBatches, mean_over_batches, open_split
from ..train.ddp import process_group
from ..train.data import read_meta
from ..speed import add_speed_arguments, speed_from_args


def run_pretrain(data_dir: str | Path, out_dir: str | Path, config: LlamaConfig, train: TrainConfig,
                 batch_size: int = 8, seq_len: int | None = None, eval_batches: int = 8,
                 attn_backend: str = "sdpa") -> dict[str, Any]:
    """Train a fresh model of shape ``config`` on the token files of ``data_dir`` (``train.bin``,
    ``val.bin``, ``meta.json``) with the shared :class:`~minillama.train.Trainer`: ``batch_size``
    random windows of ``seq_len`` tokens per micro-batch (all processes together), the validation
    loss on ``eval_batches`` fixed windows of ``val.bin``. Writes ``out_dir/model`` and returns the
    run's summary (steps, last training and validation loss, median tokens/s)."""
    env = DistEnv.current()
    out_dir = Path(out_dir)
    seq_len = seq_len or config.max_seq_len
    if not 1 <= seq_len <= config.max_seq_len:
        raise ValueError(f"seq_len must be in [1, max_seq_len={config.max_seq_len}], got {seq_len}")
    train_tokens, val_tokens = open_split(data_dir, "train"), open_split(data_dir, "val")
    batches = WindowBatches(train_tokens, batch_size, seq_len, train.seed, env.rank, env.world_size)
    # The same windows at every evaluation, so the numbers are comparable across evaluations and runs.
    val_windows = WindowBatches(val_tokens, batch_size, seq_len, train.seed + 1, env.rank, env.world_size)
    val_batches = [next(val_windows) for _ in range(eval_batches)]

    def val_fn(model: nn.Module) -> dict[str, float]:
        metrics = mean_over_batches(model, lm_loss, val_batches, env)
        return {**metrics, "val_ppl": math.exp(min(metrics["val_loss"], 50.0))}

    model = Llama(config, seed=train.seed, attn_backend=attn_backend)
    records = Trainer(model, lm_loss, batches, train, out_dir, val_fn, env).fit()
    if env.is_main:
        save_model(model, out_dir / "model")
    steps = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    return {"steps": train.steps, "final_train_loss": steps[-1]["loss"] if steps else None,
            "val_loss": val[-1]["val_loss"] if val else None,
            "tokens_per_s_median": float(np.median([r["tokens_per_s"] for r in steps])) if steps else None,
            "model": str(out_dir / "model")}


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama pretrain",
        description="Pretrain a Llama model on token files (train.bin, val.bin, meta.json). Rerunning with the "
                    "same --out resumes from its latest checkpoint. The final model is written to OUT/model, "
                    "loadable with minillama.load_model(OUT/model). Several processes: "
                    "torchrun --standalone --nproc_per_node N -m minillama pretrain ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="directory with train.bin, val.bin (flat uint16/int32 token ids) and meta.json (vocab_size)")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory: metrics.jsonl, loss.png, checkpoints/, model/")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model shape (LlamaConfig preset)")
    p.add_argument("--dim", type=int, help="override the preset's model width")
    p.add_argument("--n-layers", type=int, help="override the preset's number of blocks")
    p.add_argument("--n-heads", type=int, help="override the preset's number of query heads")
    p.add_argument("--n-kv-heads", type=int, help="override the preset's number of key/value heads (GQA)")
    p.add_argument("--attn-backend", default="sdpa", choices=ATTN_BACKENDS,
                   help="attention implementation (changes speed, not results)")
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
    p.add_argument("--threads", type=int,
                   help="CPU threads per process (default: torch's choice; 1 is often fastest on a busy machine)")
    p.add_argument("--fresh", action="store_true",
                   help="start again from step 0: delete OUT's checkpoints and metrics instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_arguments(p)
    return p


def model_config_for(args: argparse.Namespace, vocab_size: int) -> LlamaConfig:
    overrides = {k: v for k, v in (("dim", args.dim), ("n_layers", args.n_layers), ("n_heads", args.n_heads),
                                   ("n_kv_heads", args.n_kv_heads)) if v is not None}
    if args.n_heads is not None and args.n_kv_heads is None:
        overrides["n_kv_heads"] = args.n_heads  # the preset's GQA ratio may not divide the new head count
    max_seq_len = max(PRESETS[args.preset].get("max_seq_len", 256), args.seq_len or 0)
    return LlamaConfig.from_preset(args.preset, vocab_size=vocab_size, max_seq_len=max_seq_len, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = model_config_for(args, read_meta(args.data)["vocab_size"])
    train = TrainConfig(
        steps=args.steps, lr=args.lr, warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, grad_accum=args.grad_accum,
        eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval, keep_last=args.keep_last,
        seed=args.seed, **speed_from_args(args).training(), device=args.device,
        resume=not args.fresh, progress=not args.no_progress)
    with process_group(args.device) as env:
        summary = run_pretrain(args.data, args.out, config, train, args.batch_size, args.seq_len, args.eval_batches,
                               args.attn_backend)
    if env.is_main:
        print(describe(summary))
    return 0


def describe(summary: dict[str, Any]) -> str:
    if summary["final_train_loss"] is None:
        return f"nothing to do: already trained to step {summary['steps']}; model in {summary['model']}"
    line = f"step {summary['steps']}: train loss {summary['final_train_loss']:.4f}"
    if summary["val_loss"] is not None:
        line += f", val loss {summary['val_loss']:.4f}"
    return f"{line}; median {summary['tokens_per_s_median']:,.0f} tokens/s; model in {summary['model']}"
