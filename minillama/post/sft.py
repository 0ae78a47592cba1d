"""Supervised fine-tuning (SFT): teach the pretrained model to answer in the chat template.

Each example is one chat, ``<s><|user|>{prompt}<|end|><|assistant|>{answer}<|end|>``, with
*labels*: the token ids where the assistant speaks (the answer and its ``<|end|>``, so the model
learns to stop) and ``-100`` everywhere else. The loss is the next-token cross-entropy on the
labelled tokens only: the model reads the prompt but is never trained to write it.

Packing, as Llama 2 did it, with one change: Llama 2 concatenated its chats into full rows of
4,096 tokens. Here the chats (a few dozen tokens each), in a seeded random order, fill rows of
``seq_len + 1`` tokens whole: a chat that would not fit starts the next row, and the rest of a row
is padding with label ``-100`` (12% of the row tokens in the course run). Cutting the
stream at fixed row boundaries instead would leave one chat in five split across two rows,
its answer trained without its question in view: with 256-token rows that taught the tiny model
to answer with a name from nowhere ("What does Fay do for work?" -> "Adam is a baker."): helpful
accuracy 0.09 against 0.15 for whole chats, on 1,500 validation prompts, from the same pretrained
model with two seeds each. Inputs are ``row[:-1]``, targets ``row[1:]``.

What packing allows: the padding sits at the end of a row, so the causal mask already keeps every
real token from attending to it, but an answer does attend to the chats packed before it in the
row. Llama 2 accepted that; the ``<s>`` at each start tells the model a new chat begins. Keeping
chats apart would need a block-diagonal mask. ``run_sft`` measures the price: the answer loss of
the same validation chats packed and alone (``val_loss`` / ``val_loss_alone``, see
:func:`packing_probe`).

``minillama sft --init RUN/model --tokenizer TOK --data DATA --out OUT`` runs it; rerunning the
same command resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Oracle, Task
from ..fileio import save_json
from ..model import Llama
from ..tokenizer import Tokenizer
from ..train import DistEnv, TrainConfig, Trainer
from ..train.ddp import all_reduce_sum, barrier, setup, teardown
from ..train.loop import PRECISIONS
from ..train.state import CHECKPOINTS
from .evaluate import evaluate_model, summary
from .sampling import chat_messages

IGNORE_INDEX = -100
PACKING_STREAM = 2**32 - 1  # the random stream of the packing order, apart from the epochs' [seed, e]
Example = tuple[list[int], list[int]]  # (token ids, labels with IGNORE_INDEX outside the answer)


# ---------------------------------------------------------------------------------- examples
def chat_example(tokenizer: Tokenizer, prompt: str, response: str, system: str | None = None) -> Example:
    """``(ids, labels)`` of the chat ``user: prompt, assistant: response``; ``labels[i] == ids[i]``
    on the response and its ``<|end|>``, ``-100`` elsewhere."""
    ids, mask = tokenizer.apply_chat_template(chat_messages(prompt, response, system))
    return ids, [i if m else IGNORE_INDEX for i, m in zip(ids, mask)]


def sft_examples(tokenizer: Tokenizer, tasks: Sequence[Task], system: str | None = None) -> list[Example]:
    """One example per task: its prompt answered by its reference response."""
    return [chat_example(tokenizer, task.prompt, task.reference, system) for task in tasks]


def _flatten(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not examples:
        raise ValueError("examples must not be empty")
    for k, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels) or not ids:
            raise ValueError(f"examples[{k}]: ids and labels must be non-empty and of equal length, "
                             f"got {len(ids)} and {len(labels)}")
    lengths = np.array([len(ids) for ids, _ in examples], dtype=np.int64)
    ids = np.fromiter((i for e, _ in examples for i in e), dtype=np.int64, count=int(lengths.sum()))
    labels = np.fromiter((i for _, e in examples for i in e), dtype=np.int64, count=int(lengths.sum()))
    return ids, labels, lengths


# ---------------------------------------------------------------------------------- packed batches
def pack_whole(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Greedy packing: examples (by index, in the given order) fill a row of ``width`` tokens until
    the next one would not fit, which then starts the next row. No example is ever cut."""
    rows: list[list[int]] = []
    used = width
    for index, n in enumerate(lengths):
        if n > width:
            raise ValueError(f"example {index} has {n} tokens, more than a row of {width}; "
                             f"allowed: seq_len >= {n - 1}")
        if used + n > width:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += n
    return rows


def _stack_rows(rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """``(ids, labels)`` rows -> a batch ``{"tokens", "labels"}``, each ``(b, seq_len + 1)``."""
    return {"tokens": torch.from_numpy(np.stack([r[0] for r in rows])),
            "labels": torch.from_numpy(np.stack([r[1] for r in rows]))}


class PackedSFTBatches:
    """Batches ``{"tokens", "labels"}`` of shape ``(b, seq_len + 1)`` packed from whole chat examples.

    The examples, in the seeded order :meth:`packing_order`, fill rows of ``seq_len + 1`` tokens
    (:func:`pack_whole`); the rest of a row is ``pad_id`` with label ``-100``. Padding sits at the
    end of a row, so under the causal mask no real token ever attends to it. Epoch ``e`` visits
    the rows in the order ``default_rng([seed, e]).permutation``. The rows of all epochs form one
    sequence; draw ``p`` takes rows ``[p B, (p + 1) B)`` (``B = batch_size``, the global batch) and
    this rank keeps its ``batch_size / world_size`` of them, as
    :class:`~minillama.train.WindowBatches` does. ``steps_per_epoch = ceil(rows_per_epoch / B)``;
    with ``epochs`` set, the source stops after ``epochs * steps_per_epoch`` draws (None: endless).
    Resumable: ``state_dict()`` is the draw position plus what must match on resume.
    """

    def __init__(self, examples: Sequence[Example], batch_size: int, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, epochs: int | None = None, position: int = 0, pad_id: int = 0) -> None:
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("world_size", world_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size % world_size:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by world_size ({world_size}); "
                             f"allowed batch sizes: multiples of {world_size}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"epochs must be None (endless) or an int >= 1, got {epochs!r}")
        self.ids, self.labels, self.lengths = _flatten(examples)
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        self.batch_size, self.seq_len, self.seed, self.pad_id = batch_size, seq_len, seed, pad_id
        self.rank, self.world_size, self.epochs, self.position = rank, world_size, epochs, position
        order = self.packing_order()
        self.rows = [order[r].tolist() for r in pack_whole(self.lengths[order].tolist(), seq_len + 1)]
        self.rows_per_epoch = len(self.rows)
        self.steps_per_epoch = math.ceil(self.rows_per_epoch / batch_size)
        self.fingerprint = zlib.crc32(self.labels.tobytes(), zlib.crc32(self.ids.tobytes()))

    @property
    def n_examples(self) -> int:
        return len(self.lengths)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def total_steps(self) -> int | None:
        return None if self.epochs is None else self.epochs * self.steps_per_epoch

    @property
    def padding_share(self) -> float:
        """The share of row tokens that are padding."""
        return 1.0 - len(self.ids) / (self.rows_per_epoch * (self.seq_len + 1))

    def packing_order(self) -> np.ndarray:
        """The order in which the examples fill the rows: a seeded permutation of ``range(n_examples)``."""
        return np.random.default_rng([self.seed, PACKING_STREAM]).permutation(self.n_examples)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch``: a permutation of ``range(rows_per_epoch)``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows_per_epoch)

    def example(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Example ``e`` as it was given: ``(ids, labels)``."""
        span = slice(self.starts[e], self.starts[e] + self.lengths[e])
        return self.ids[span], self.labels[span]

    def packed_row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Packed row ``r`` (in packing order): ``(ids, labels)``, each ``(seq_len + 1,)``."""
        chats = [self.example(e) for e in self.rows[r]]
        ids = np.concatenate([c[0] for c in chats])
        labels = np.concatenate([c[1] for c in chats])
        pad = self.seq_len + 1 - len(ids)
        return (np.concatenate([ids, np.full(pad, self.pad_id, dtype=np.int64)]),
                np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)]))

    def row(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Global row ``k``: row ``k mod rows_per_epoch`` of its epoch's order."""
        epoch, j = divmod(k, self.rows_per_epoch)
        return self.packed_row(int(self.order(epoch)[j]))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.total_steps is not None and self.position >= self.total_steps:
            raise StopIteration
        first = self.position * self.batch_size + self.rank * self.local_batch_size
        rows = [self.row(k) for k in range(first, first + self.local_batch_size)]
        self.position += 1
        return _stack_rows(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_size", "seq_len", "fingerprint"):
            if state[key] != getattr(self, key):
                what = "the examples differ" if key == "fingerprint" else f"this run has {key}={getattr(self, key)}"
                raise ValueError(f"cannot resume the SFT data stream: checkpoint has {key}={state[key]}, {what}; "
                                 f"rerun with the same data and settings or start a fresh run")
        self.position = int(state["position"])


# ---------------------------------------------------------------------------------- loss
def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mean next-token cross-entropy over the labelled (answer) tokens of ``batch``.

    ``tokens, labels (b, t + 1)``: inputs are ``tokens[:, :-1]``, targets ``labels[:, 1:]``; an
    optional ``attention_mask (b, t + 1)`` marks padding. ``count`` is the number of answer tokens."""
    inputs, targets = batch["tokens"][:, :-1], batch["labels"][:, 1:]
    mask = batch.get("attention_mask")
    logits = model(inputs) if mask is None else model(inputs, attention_mask=mask[:, :-1])  # (b, t, v)
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    count = (targets != IGNORE_INDEX).sum()
    return total / count.clamp(min=1), {"count": count, "tokens": inputs.numel()}


@torch.no_grad()
def sft_eval_loss(model: nn.Module, batches: Sequence[dict[str, torch.Tensor]], env: DistEnv = DistEnv()) -> float:
    """Answer-token loss over ``batches`` (every rank passes its own share; summed over ranks)."""
    device = next(model.parameters()).device
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in batches:
        loss, metrics = sft_loss(model, {k: v.to(device) for k, v in batch.items()})
        sums += torch.stack([loss.double() * metrics["count"], metrics["count"].double()])
    total, count = all_reduce_sum(sums, env).tolist()
    return total / max(count, 1.0)


def padded_batches(examples: Sequence[Example], batch_size: int, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """Each example alone in a right-padded row (no packing): ``tokens``, ``labels``, ``attention_mask``."""
    out = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first:first + batch_size]
        t = max(len(ids) for ids, _ in chunk)
        tokens = torch.full((len(chunk), t), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), t), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), t), dtype=torch.long)
        for row, (ids, lab) in enumerate(chunk):
            tokens[row, :len(ids)], labels[row, :len(ids)], mask[row, :len(ids)] = (
                torch.tensor(ids), torch.tensor(lab), 1)
        out.append({"tokens": tokens, "labels": labels, "attention_mask": mask})
    return out


def packing_probe(source: PackedSFTBatches, n_rows: int, batch_size: int,
                  env: DistEnv = DistEnv()) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Validation batches from the first ``n_rows`` packed rows of ``source`` (this rank's share):
    ``(packed, alone)``. ``packed`` are the rows as training sees them; ``alone`` the same chats,
    each in a row of its own, padded with ``source.pad_id``. The same answer tokens in both, so
    their losses differ only by what the answers could attend to before their ``<s>``: the chats
    packed in front of them."""
    mine = range(env.rank, max(1, min(n_rows, source.rows_per_epoch)), env.world_size)
    packed = [_stack_rows([source.packed_row(r) for r in mine[first:first + batch_size]])
              for first in range(0, len(mine), batch_size)]
    alone = [tuple(part.tolist() for part in source.example(e)) for r in mine for e in source.rows[r]]
    return packed, padded_batches(alone, batch_size, source.pad_id)


# ---------------------------------------------------------------------------------- the stage
def read_tasks(*paths: str | Path) -> list[Task]:
    tasks = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            tasks += [Task.from_dict(json.loads(line)) for line in f if line.strip()]
    return tasks


def val_tasks(data_dir: str | Path, n_chat: int, n_safety: int) -> list[Task]:
    """The first ``n_chat`` chat and ``n_safety`` safety validation tasks of a ``minillama data``
    folder: the held-out prompts the oracle scores a stage on."""
    data_dir = Path(data_dir)
    return read_tasks(data_dir / "chat_val.jsonl")[:n_chat] + read_tasks(data_dir / "safety_val.jsonl")[:n_safety]


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory (``config.json`` + weights), or a run directory holding one in ``model/``."""
    path = Path(path)
    if (path / "config.json").is_file() and any(path.glob("model*.safetensors*")):
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    raise ValueError(f"--init {path}: neither a model directory (config.json + model.safetensors) "
                     f"nor a run directory with model/ in it")


def subset(tasks: list[Task], n: int | None, seed: int, stream: int = 7) -> list[Task]:
    """``n`` of ``tasks`` drawn at random, in their original order (all of them when ``n`` is None or
    not smaller). ``stream`` keeps the draws of different stages apart for the same ``seed``."""
    if n is None or n >= len(tasks):
        return tasks
    keep = np.sort(np.random.default_rng([seed, stream]).choice(len(tasks), n, replace=False))
    return [tasks[i] for i in keep]


def run_sft(init_dir: str | Path, tokenizer_path: str | Path, data_dir: str | Path, out_dir: str | Path,
            epochs: int = 2, batch_size: int = 16, lr: float = 5e-4, weight_decay: float = 0.1, seed: int = 0, *,
            seq_len: int | None = None, warmup_steps: int | None = None, min_lr_ratio: float = 0.1,
            grad_clip: float = 1.0, grad_accum: int = 1, safety: bool = True, max_examples: int | None = None,
            system: str | None = None, eval_interval: int = 0, checkpoint_interval: int = 100,
            val_rows: int = 64, eval_prompts: int = 200, eval_safety: int = 100, max_new_tokens: int = 64,
            eval_before: bool = True, device: str = "auto", precision: str = "auto", progress: bool = True,
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
    """
    env = DistEnv.current()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    model_dir = resolve_model_dir(init_dir)
    tokenizer = Tokenizer.load(tokenizer_path)
    model = Llama.from_pretrained(model_dir, dtype=torch.float32)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the model's vocab_size {model.config.vocab_size} is smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}: --init and --tokenizer do not belong together")
    seq_len = model.config.max_seq_len if seq_len is None else seq_len
    if not 1 <= seq_len <= model.config.max_seq_len:
        raise ValueError(f"seq_len must be in [1, max_seq_len={model.config.max_seq_len}], got {seq_len}")

    train_files = [data_dir / "chat_train.jsonl"] + ([data_dir / "safety_train.jsonl"] if safety else [])
    val_files = [data_dir / "chat_val.jsonl"] + ([data_dir / "safety_val.jsonl"] if safety else [])
    for path in train_files + val_files:
        if not path.is_file():
            raise ValueError(f"{path} is missing: --data must be a folder written by `minillama data`")
    train_tasks = subset(read_tasks(*train_files), max_examples, seed)
    examples = sft_examples(tokenizer, train_tasks, system)
    batches = PackedSFTBatches(examples, batch_size, seq_len, seed, env.rank, env.world_size, pad_id=tokenizer.pad_id)
    steps = epochs * batches.steps_per_epoch
    warmup = min(steps, max(1, steps // 30)) if warmup_steps is None else warmup_steps
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=warmup, min_lr_ratio=min_lr_ratio,
                         weight_decay=weight_decay, grad_clip=grad_clip, grad_accum=grad_accum,
                         eval_interval=eval_interval, checkpoint_interval=checkpoint_interval, seed=seed,
                         device=device, precision=precision, resume=resume, progress=progress)

    chat_val, safety_val = read_tasks(val_files[0]), read_tasks(*val_files[1:])
    val_source = PackedSFTBatches(sft_examples(tokenizer, chat_val + safety_val, system), batch_size, seq_len, seed,
                                  pad_id=tokenizer.pad_id)
    val_packed, val_alone = packing_probe(val_source, val_rows, batch_size, env)

    def val_fn(m: nn.Module) -> dict[str, float]:
        return {"val_loss": sft_eval_loss(m, val_packed, env)}

    eval_tasks = chat_val[:eval_prompts] + safety_val[:eval_safety]
    oracle = Oracle(eval_tasks)
    results: dict[str, Any] = {}
    model.to(env.device(device))
    if env.is_main and eval_before and eval_tasks:
        if _starts_fresh(out_dir, resume):
            results["before"] = summary(evaluate_model(model, tokenizer, oracle, eval_tasks, max_new_tokens,
                                                       seed=seed, system=system))
        elif (out_dir / "sft_metrics.json").is_file():  # a resumed run keeps the first attempt's scores
            results.update({k: v for k, v in json.loads((out_dir / "sft_metrics.json").read_text())["eval"].items()
                            if k == "before"})
    trainer = Trainer(model, sft_loss, batches, config, out_dir, val_fn, env)
    records = trainer.fit()
    model.eval()
    # The same answers behind other chats in a packed row, or alone: what cross-example attention costs.
    losses = {"val_loss": sft_eval_loss(model, val_packed, env), "val_loss_alone": sft_eval_loss(model, val_alone, env)}
    if env.is_main:
        if eval_tasks:
            results["after"] = summary(evaluate_model(model, tokenizer, oracle, eval_tasks, max_new_tokens,
                                                      seed=seed, system=system))
        model.save_pretrained(out_dir / "model")
        tokenizer.save(out_dir / "model")
        train = [r for r in records if r["kind"] == "train"]
        metrics = {
            "stage": "sft", "init": str(model_dir), "data": str(data_dir), "steps": trainer.step,
            "epochs": epochs, "steps_per_epoch": batches.steps_per_epoch, "examples": batches.n_examples,
            "tokens_per_epoch": int(batches.rows_per_epoch * seq_len), "padding_share": batches.padding_share,
            "answer_token_share": float((batches.labels != IGNORE_INDEX).mean()),
            "final_train_loss": train[-1]["loss"] if train else None, **losses, "eval": results,
            "eval_prompts": len(eval_tasks), "train_config": config.to_dict(),
        }
        save_json(out_dir / "sft_metrics.json", metrics)
        return metrics
    return {"steps": trainer.step, **losses}


def _starts_fresh(out_dir: Path, resume: bool) -> bool:
    """Whether this run starts from the initial model (then its "before" scores are worth computing)."""
    return not (resume and (out_dir / CHECKPOINTS / "latest").is_file())


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama sft",
        description="Supervised fine-tuning: train a pretrained model on TinyWorld chat tasks, with the loss on "
                    "the answer tokens only and the examples packed into full sequences (Llama 2). Rerunning "
                    "with the same --out resumes from its latest checkpoint. Writes OUT/model (weights, config, "
                    "tokenizer), OUT/sft_metrics.json (losses and the oracle's scores before and after), "
                    "OUT/metrics.jsonl and OUT/loss.png. Several processes: torchrun --standalone "
                    "--nproc_per_node N -m minillama.post.sft ...",
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
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: bf16 autocast on GPU, fp32 on CPU")
    p.add_argument("--threads", type=int, help="CPU threads per process (default: torch's choice)")
    p.add_argument("--fresh", action="store_true",
                   help="start again from the initial model: delete OUT's checkpoints and metrics.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("epochs", "batch_size", "grad_accum"):
        if getattr(args, name) < 1:
            raise SystemExit(f"minillama sft: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"minillama sft: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    env = setup(args.device)
    try:
        if args.fresh and env.is_main:
            shutil.rmtree(args.out / CHECKPOINTS, ignore_errors=True)
            (args.out / "metrics.jsonl").unlink(missing_ok=True)
        barrier(env)
        metrics = run_sft(
            args.init, args.tokenizer, args.data, args.out, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, seq_len=args.seq_len,
            warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip,
            grad_accum=args.grad_accum, safety=not args.no_safety, max_examples=args.max_examples,
            system=args.system, eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
            val_rows=args.val_rows, eval_prompts=args.eval_prompts, eval_safety=args.eval_safety,
            max_new_tokens=args.max_new_tokens, eval_before=not args.no_eval_before, device=args.device,
            precision=args.precision, progress=not args.no_progress)
        if env.is_main:
            print(describe(metrics, args.out))
    finally:
        teardown()
    return 0


def describe(metrics: dict[str, Any], out: Path) -> str:
    line = (f"SFT: {metrics['steps']} steps, val answer loss {metrics['val_loss']:.4f} packed, "
            f"{metrics['val_loss_alone']:.4f} with each chat alone")
    for when in ("before", "after"):
        if when in metrics["eval"]:
            acc = metrics["eval"][when]["helpful_accuracy"]
            line += f"; helpful accuracy {when} {acc['mean']:.3f} [{acc['lo']:.3f}, {acc['hi']:.3f}]"
    return f"{line}; model in {out / 'model'}"


if __name__ == "__main__":
    sys.exit(main())
