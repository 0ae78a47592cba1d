"""Supervised fine-tuning (SFT): teach the pretrained model to answer in the chat template.

Each example is one chat, ``<s><|user|>{prompt}<|end|><|assistant|>{answer}<|end|>``, with
*labels*: the token ids where the assistant speaks (the answer and its ``<|end|>``, so the model
learns to stop) and ``-100`` everywhere else. The loss is the next-token cross-entropy on the
labelled tokens only: the model reads the prompt but is never trained to write it.

Packing, as Llama 2 did it, with one change: Llama 2 concatenated its chats into full rows of
4,096 tokens. Here the chats (a few dozen tokens each), in a seeded random order, fill rows of
``seq_len + 1`` tokens whole (:class:`~minillama.train.packing.PackedSFTBatches`): a chat that
would not fit starts the next row, and the rest of a row is padding with label ``-100`` (12% of
the row tokens in the course run). Cutting the stream at fixed row boundaries instead would leave
one chat in five split across two rows, its answer trained without its question in view: with
256-token rows that taught the tiny model to answer with a name from nowhere ("What does Fay do for
work?" -> "Adam is a baker."): helpful accuracy 0.09 against 0.15 for whole chats, on 1,500
validation prompts, from the same pretrained model with two seeds each. Inputs are ``row[:-1]``,
targets ``row[1:]``.

What packing allows: the padding sits at the end of a row, so the causal mask already keeps every
real token from attending to it, but an answer does attend to the chats packed before it in the
row. Llama 2 accepted that; the ``<s>`` at each start tells the model a new chat begins. Keeping
chats apart would need a block-diagonal mask. ``run_sft`` measures the price: the answer loss of
the same validation chats packed and alone (``val_loss`` / ``val_loss_alone``, see
:func:`packing_probe`).

``minillama sft --init RUN/model --data DATA --out OUT`` runs it; rerunning the same command
resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..chat import chat_example
from ..checkpoint import load_model, resolve_model_dir, save_model
from ..data import Oracle, Task
from ..data.annotators import AnnotatorPool, flaw_counts
from ..data.files import load_tasks, subset
from ..evaluate.oracle import evaluate_model, summary
from ..fileio import read_json, save_json
from ..model import Llama
from ..sequences import IGNORE_INDEX, Example, lm_loss, pad_rows
from ..tokenizer import Tokenizer
from ..train import DistEnv, TrainConfig, Trainer, mean_over_batches
from ..train.ddp import process_group
from ..speed import Speed, add_speed_arguments, speed_from_args
from ..train.packing import PackedSFTBatches, stack_rows
from ..train.state import latest_checkpoint


def sft_examples(tokenizer: Tokenizer, tasks: Sequence[Task], system: str | None = None,
                 max_len: int | None = None, annotators: AnnotatorPool | None = None) -> list[Example]:
    """One example per task: its prompt answered by the demonstration ``annotators`` write for it
    (:mod:`minillama.data.annotators`), or by the oracle's reference when ``annotators`` is None."""
    answers = [t.reference for t in tasks] if annotators is None else [d.text for d in annotators.demonstrations(tasks)]
    return [chat_example(tokenizer, task.prompt, answer, system, max_len) for task, answer in zip(tasks, answers)]


def packing_probe(source: PackedSFTBatches, n_rows: int, batch_size: int,
                  env: DistEnv = DistEnv()) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Validation batches from the first ``n_rows`` packed rows of ``source`` (this rank's share):
    ``(packed, alone)``. ``packed`` are the rows as training sees them; ``alone`` the same chats,
    each in a row of its own, right-padded with ``source.pad_id`` (labels ``-100`` there). The same
    answer tokens in both, so their losses differ only by what the answers could attend to before
    their ``<s>``: the chats packed in front of them."""
    mine = range(env.rank, max(1, min(n_rows, source.rows_per_epoch)), env.world_size)
    packed = [stack_rows([source.packed_row(r) for r in mine[first:first + batch_size]])
              for first in range(0, len(mine), batch_size)]
    alone = [source.example(e) for r in mine for e in source.rows[r]]
    batches = []
    for first in range(0, len(alone), batch_size):
        chunk = alone[first:first + batch_size]
        tokens, mask = pad_rows([ids.tolist() for ids, _ in chunk], source.pad_id)
        labels = pad_rows([labels.tolist() for _, labels in chunk], IGNORE_INDEX)[0]
        batches.append({"tokens": tokens, "labels": labels, "attention_mask": mask})
    return packed, batches


def run_sft(init_dir: str | Path, tokenizer: Tokenizer, data_dir: str | Path, out_dir: str | Path,
            epochs: int = 2, batch_size: int = 16, lr: float = 5e-4, weight_decay: float = 0.1, seed: int = 0, *,
            seq_len: int | None = None, warmup_steps: int | None = None, min_lr_ratio: float = 0.1,
            grad_clip: float = 1.0, grad_accum: int = 1, safety: bool = True, max_examples: int | None = None,
            uneven_demos: float = 0.3,
            system: str | None = None, eval_interval: int = 0, checkpoint_interval: int = 100,
            val_rows: int = 64, eval_prompts: int = 200, eval_safety: int = 100, max_new_tokens: int = 64,
            eval_before: bool = True, device: str = "auto", speed: Speed = Speed(), progress: bool = True,
            resume: bool = True) -> dict[str, Any]:
    """Fine-tune the model in ``init_dir`` on the chat (and safety) tasks of ``data_dir``.

    ``data_dir`` is what ``minillama data`` writes: ``chat_train.jsonl`` (+ ``safety_train.jsonl``
    when ``safety``) train, ``chat_val.jsonl`` / ``safety_val.jsonl`` validate. Trains ``epochs``
    passes over the packed examples with the shared :class:`~minillama.train.Trainer` (AdamW,
    warmup + cosine to ``min_lr_ratio``, weight decay, clipping); rerunning resumes from
    ``out_dir``'s last checkpoint. Writes ``out_dir/model`` (weights, config, tokenizer) and
    ``out_dir/sft_metrics.json``, and returns that dict: training summary, validation answer loss,
    and the oracle's scores of greedy answers to ``eval_prompts`` chat + ``eval_safety`` safety
    validation prompts, before (``eval_before``) and after fine-tuning.

    The answers trained on are the simulated annotators' demonstrations, a share ``uneven_demos``
    of them flawed (:class:`~minillama.data.annotators.AnnotatorPool`, seeded by ``seed``; 0 trains
    on the oracle's references).
    """
    env = DistEnv.current()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    model_dir = resolve_model_dir(init_dir)
    model = load_model(model_dir, dtype=torch.float32, kind=Llama)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the model's vocab_size {model.config.vocab_size} is smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}: --init and --tokenizer do not belong together")
    seq_len = model.config.max_seq_len if seq_len is None else seq_len
    if not 1 <= seq_len <= model.config.max_seq_len:
        raise ValueError(f"seq_len must be in [1, max_seq_len={model.config.max_seq_len}], got {seq_len}")

    kinds = ("chat", "safety") if safety else ("chat",)
    train_tasks = subset(load_tasks(data_dir, *(f"{kind}_train" for kind in kinds)), max_examples, seed)
    annotators = AnnotatorPool(uneven_demos, seed)
    examples = sft_examples(tokenizer, train_tasks, system, seq_len + 1, annotators)
    batches = PackedSFTBatches(examples, batch_size, seq_len, seed, env.rank, env.world_size, pad_id=tokenizer.pad_id)
    steps = epochs * batches.steps_per_epoch
    warmup = min(steps, max(1, steps // 30)) if warmup_steps is None else warmup_steps
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=warmup, min_lr_ratio=min_lr_ratio,
                         weight_decay=weight_decay, grad_clip=grad_clip, grad_accum=grad_accum,
                         eval_interval=eval_interval, checkpoint_interval=checkpoint_interval, seed=seed,
                         device=device, resume=resume, progress=progress, **speed.training())

    chat_val = load_tasks(data_dir, "chat_val")
    safety_val = load_tasks(data_dir, "safety_val") if safety else []
    val_source = PackedSFTBatches(sft_examples(tokenizer, chat_val + safety_val, system, seq_len + 1, annotators),
                                  batch_size,
                                  seq_len, seed, pad_id=tokenizer.pad_id)
    val_packed, val_alone = packing_probe(val_source, val_rows, batch_size, env)

    def val_fn(m: nn.Module) -> dict[str, float]:
        return mean_over_batches(m, lm_loss, val_packed, env)

    eval_tasks = chat_val[:eval_prompts] + safety_val[:eval_safety]
    oracle = Oracle(eval_tasks)
    results: dict[str, Any] = {}
    model.to(env.device(device))
    if env.is_main and eval_before and eval_tasks:
        if not (resume and latest_checkpoint(out_dir) is not None):
            results["before"] = summary(evaluate_model(model, tokenizer, oracle, eval_tasks, max_new_tokens,
                                                       seed=seed, system=system, speed=speed))
        elif (out_dir / "sft_metrics.json").is_file():  # a resumed run keeps the first attempt's scores
            results.update({k: v for k, v in read_json(out_dir / "sft_metrics.json")["eval"].items() if k == "before"})
    trainer = Trainer(model, lm_loss, batches, config, out_dir, val_fn, env)
    records = trainer.fit()
    # The same answers behind other chats in a packed row, or alone: what cross-example attention costs.
    losses = {"val_loss": val_fn(model)["val_loss"],
              "val_loss_alone": mean_over_batches(model, lm_loss, val_alone, env)["val_loss"]}
    if not env.is_main:
        return {"steps": trainer.step, **losses}
    if eval_tasks:
        results["after"] = summary(evaluate_model(model, tokenizer, oracle, eval_tasks, max_new_tokens, seed=seed,
                                                  system=system, speed=speed))
    save_model(model, out_dir / "model")
    tokenizer.save(out_dir / "model")
    train = [r for r in records if r["kind"] == "train"]
    metrics = {
        "stage": "sft", "init": str(model_dir), "data": str(data_dir), "steps": trainer.step,
        "epochs": epochs, "steps_per_epoch": batches.steps_per_epoch, "examples": batches.n_examples,
        "uneven_demos": uneven_demos, "demo_flaws": flaw_counts(annotators.demonstrations(train_tasks)),
        "tokens_per_epoch": int(batches.rows_per_epoch * seq_len), "padding_share": batches.padding_share,
        "answer_token_share": float((batches.labels != IGNORE_INDEX).mean()),
        "final_train_loss": train[-1]["loss"] if train else None, **losses, "eval": results,
        "eval_prompts": len(eval_tasks), "train_config": config.to_dict(),
    }
    save_json(out_dir / "sft_metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama sft",
        description="Supervised fine-tuning: train a pretrained model on TinyWorld chat tasks, with the loss on "
                    "the answer tokens only and the examples packed into full sequences (Llama 2). Rerunning "
                    "with the same --out resumes from its latest checkpoint. Writes OUT/model (weights, config, "
                    "tokenizer), OUT/sft_metrics.json (losses and the oracle's scores before and after), "
                    "OUT/metrics.jsonl and OUT/loss.png. Several processes: torchrun --standalone "
                    "--nproc_per_node N -m minillama sft ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init", required=True, type=Path,
                   help="the model to fine-tune: a model directory (config.json + model.safetensors) or a "
                        "pretraining run directory with model/ in it")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.model, or the directory holding it")
    p.add_argument("--data", required=True, type=Path,
                   help="folder written by `minillama data` (chat_*.jsonl, safety_*.jsonl)")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory: model/, sft_metrics.json, metrics.jsonl, loss.png, checkpoints/")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training examples (Llama 2: 2)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="packed rows per micro-batch over all processes together")
    p.add_argument("--seq-len", type=int, help="tokens per packed row (default: the model's max_seq_len)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches accumulated per optimizer step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (after warmup)")
    p.add_argument("--warmup", type=int, help="linear warmup steps (default: 1/30 of the run, at least 1)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays the lr to this fraction of the peak")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on weight matrices")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm; 0 disables clipping")
    p.add_argument("--no-safety", action="store_true",
                   help="train and validate on chat tasks only, without the safety tasks (refusals)")
    p.add_argument("--max-examples", type=int,
                   help="train on a seeded random subset of this many tasks (default: all of them)")
    p.add_argument("--uneven-demos", type=float, default=0.3,
                   help="share of the simulated annotators' demonstrations that are flawed (ignore the asked form, "
                        "pad, hedge, over-refuse; see minillama.data.annotators); 0: the oracle's references")
    p.add_argument("--system", help="a system prompt put in front of every chat (default: none)")
    p.add_argument("--eval-interval", type=int, default=0,
                   help="validation answer loss every N steps (and at the end); 0: at the end only")
    p.add_argument("--val-rows", type=int, default=64, help="packed validation rows the validation loss uses")
    p.add_argument("--checkpoint-interval", type=int, default=100,
                   help="checkpoint every N steps (and at the end); 0: at the end only")
    p.add_argument("--eval-prompts", type=int, default=200,
                   help="chat validation prompts the oracle scores before and after training (0: none)")
    p.add_argument("--eval-safety", type=int, default=100, help="safety validation prompts scored likewise")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer generated for the oracle")
    p.add_argument("--no-eval-before", action="store_true", help="skip scoring the initial model")
    p.add_argument("--seed", type=int, default=0, help="seed of the example order, subset and generators")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads per process (default: torch's choice)")
    p.add_argument("--fresh", action="store_true",
                   help="start again from the initial model: delete OUT's checkpoints and metrics instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_speed_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("epochs", "batch_size", "grad_accum", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with process_group(args.device) as env:
        metrics = run_sft(
            args.init, Tokenizer.load(args.tokenizer), args.data, args.out, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
            seq_len=args.seq_len, warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip,
            grad_accum=args.grad_accum, safety=not args.no_safety, max_examples=args.max_examples,
            uneven_demos=args.uneven_demos,
            system=args.system, eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
            val_rows=args.val_rows, eval_prompts=args.eval_prompts, eval_safety=args.eval_safety,
            max_new_tokens=args.max_new_tokens, eval_before=not args.no_eval_before, device=args.device,
            speed=speed_from_args(args), progress=not args.no_progress, resume=not args.fresh)
    if env.is_main:
        print(describe(metrics, args.out))
    return 0


def describe(metrics: dict[str, Any], out: Path) -> str:
    line = (f"SFT: {metrics['steps']} steps, val answer loss {metrics['val_loss']:.4f} packed, "
            f"{metrics['val_loss_alone']:.4f} with each chat alone")
    for when in ("before", "after"):
        if when in metrics["eval"]:
            acc = metrics["eval"][when]["helpful_accuracy"]
            line += f"; helpful accuracy {when} {acc['mean']:.3f} [{acc['lo']:.3f}, {acc['hi']:.3f}]"
    return f"{line}; model in {out / 'model'}"
