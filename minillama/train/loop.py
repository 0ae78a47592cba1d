"""The training loop every stage shares: pretraining, SFT, reward models, rejection sampling, DPO.

A stage brings three things:

* a model (any ``nn.Module``);
* ``loss_fn(model, batch) -> (loss, metrics)``: the mean loss of one micro-batch and a dict of
  numbers. Two keys are special: ``"count"``, how many terms the mean averages (tokens with a
  label, preference pairs; default 1), and ``"tokens"``, how many tokens the batch fed through
  the model (for tokens/s). The loss of a step is the mean over every counted term of every
  micro-batch on every rank, so masking tokens, accumulating gradients or adding processes
  never changes what is averaged. Other metrics are averaged with the same weights;
* a :class:`~minillama.train.data.BatchSource`: an endless, resumable iterator of batches.

``loss_fn`` must call ``model(...)`` (its forward), which is what DistributedDataParallel and
``torch.compile`` hook into.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..compiler import compile_or_eager
from ..fileio import save_json
from ..precision import autocast, check_precision
from ..sequences import eval_mode
from .data import BatchSource
from .ddp import DistEnv, all_reduce_sum
from .metrics import MetricsLog
from .optim import build_adamw
from .plots import plot_losses
from .schedule import CosineSchedule
from .state import CHECKPOINTS, latest_checkpoint, load_checkpoint, save_checkpoint, seed_everything

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, dict[str, float | torch.Tensor]]"]
ValFn = Callable[[nn.Module], "dict[str, float]"]


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) of a step was NaN or infinite; the step was not applied."""

    def __init__(self, step: int, what: str, value: float, checkpoint: Path | None) -> None:
        kept = (f"the last good checkpoint ({checkpoint}) is kept; rerunning resumes from it"
                if checkpoint is not None else "no checkpoint had been written yet")
        super().__init__(f"step {step}: {what} is {value}; training stopped before applying this step, {kept}. "
                         f"Try a lower learning rate or a longer warmup.")
        self.step, self.checkpoint = step, checkpoint


@dataclass
class TrainConfig:
    """How to train (the model's shape lives in its own config). Defaults follow Llama 2 where
    it says: AdamW betas (0.9, 0.95), eps 1e-5, weight decay 0.1, clip 1.0, cosine to 10%."""

    steps: int = 1000  # optimizer steps in the whole run (sets the schedule's length)
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_interval: int = 100  # validate every N steps (and at the end); 0: only at the end
    checkpoint_interval: int = 100  # checkpoint every N steps (and at the end); 0: only at the end
    keep_last: int = 2  # checkpoints kept on disk
    seed: int = 0
    precision: str = "auto"  # "auto": bf16 autocast where the device multiplies bf16 natively (minillama.precision)
    compile: bool = False  # torch.compile the model (minillama.compiler: eager, with a line, where it cannot)
    device: str = "auto"
    resume: bool = True  # continue from <out>/checkpoints/latest when there is one
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("steps", "grad_accum", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        check_precision(self.precision, "TrainConfig.precision")
        CosineSchedule(self.lr, self.warmup_steps, self.steps, self.min_lr_ratio)  # validates those four

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; allowed fields: {sorted(known)}")
        return cls(**data)


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (nested in dicts, lists, tuples) moved to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def _number(value: float | torch.Tensor) -> torch.Tensor:
    return value.detach().float().reshape(()) if torch.is_tensor(value) else torch.tensor(float(value))


class Trainer:
    """``Trainer(model, loss_fn, train_batches, config, out_dir, val_fn=None).fit()``.

    Writes into ``out_dir``: ``metrics.jsonl`` (one line per step and per evaluation),
    ``loss.png``, and ``checkpoints/`` (see :mod:`minillama.train.state`). Constructing a trainer
    on an ``out_dir`` that has a checkpoint resumes from it (``config.resume``), so rerunning the
    same command after a crash continues where the last checkpoint left off, bit-exactly on CPU.

    ``val_fn(model) -> {"val_loss": ...}`` runs every ``eval_interval`` steps in eval mode under
    ``torch.no_grad``, on every rank (it may all-reduce); rank 0 logs what it returns.
    The model's ``config`` is recorded in checkpoints; resuming with a model of another shape is a
    ``ValueError``. With ``config.resume`` off, the run starts from step 0 and deletes the checkpoints
    of an earlier attempt.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, train_batches: BatchSource, config: TrainConfig,
                 out_dir: str | Path, val_fn: ValFn | None = None, env: DistEnv | None = None) -> None:
        if not isinstance(train_batches, BatchSource):
            raise TypeError("train_batches must be a BatchSource (__next__, state_dict, load_state_dict), "
                            f"got {type(train_batches).__name__}")
        self.config, self.loss_fn, self.val_fn, self.batches = config, loss_fn, val_fn, train_batches
        self.out_dir = Path(out_dir)
        self.env = env or DistEnv.current()
        self.device = self.env.device(config.device)
        self.model = model.to(self.device)
        self.schedule = CosineSchedule(config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)
        self.optimizer, self.param_names = build_adamw(self.model, config.lr, config.weight_decay, config.betas,
                                                       config.eps)
        self.log = MetricsLog(self.out_dir / "metrics.jsonl")
        self.step = 0  # optimizer steps taken
        self.last_checkpoint: Path | None = None
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        seed_everything(config.seed + self.env.rank)
        self.forward_model = self._wrap(self.model)
        if config.resume and latest_checkpoint(self.out_dir) is not None:
            self._resume(latest_checkpoint(self.out_dir))
        elif self.env.is_main:  # a run from step 0: an earlier attempt's checkpoints and lines are stale
            shutil.rmtree(self.out_dir / CHECKPOINTS, ignore_errors=True)
            self.log.truncate_after(0)

    # ---------------------------------------------------------------- set-up
    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.env.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        return compile_or_eager(model, self.config.compile, self.device, "Trainer(compile=True)")

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.config.precision, self.device)

    def _resume(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint, self.model, self.optimizer, self.param_names, self.env)
        self.step, self.last_checkpoint = state["step"], checkpoint
        self.batches.load_state_dict(state["data"])
        # Allowed (e.g. more steps to extend a run), but then the run is no longer the one it continues.
        changed = {k: (old, getattr(self.config, k)) for k, old in state["train_config"].items()
                   if k in ("steps", "lr", "warmup_steps", "min_lr_ratio", "grad_accum", "seed")
                   and old != getattr(self.config, k)}
        if self.env.is_main:
            self.log.truncate_after(self.step)
            print(f"resuming from {checkpoint} (step {self.step})", file=sys.stderr)
            if changed:
                print(f"note: settings changed since the checkpoint (old, new): {changed}", file=sys.stderr)

    # ---------------------------------------------------------------- one step
    def _sync_context(self, micro: int) -> contextlib.AbstractContextManager:
        # Gradients are summed locally over micro-batches and reduced across ranks only once, on the last.
        if self.ddp is not None and micro < self.config.grad_accum - 1:
            return self.ddp.no_sync()
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, Any]:
        """Draw ``grad_accum`` micro-batches, accumulate, reduce, clip and apply one AdamW step."""
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        for micro in range(self.config.grad_accum):
            batch = move_to(next(self.batches), self.device)
            with self._sync_context(micro):
                with self._autocast():
                    loss, metrics = self.loss_fn(self.forward_model, batch)
                count = _number(metrics.get("count", 1.0)).to(self.device)
                # Backpropagate the sum over counted terms; dividing by the global count below
                # turns it into the mean over every term of the step, however they were split.
                (loss * count).backward()
            self._accumulate(totals, loss, count, metrics)
        keys = sorted(totals)
        reduced = all_reduce_sum(torch.stack([totals[k] for k in keys]), self.env)
        totals = dict(zip(keys, reduced.tolist()))
        count = totals.pop("count")
        if count <= 0:
            raise ValueError(f"step {self.step + 1}: loss_fn reported count 0 for every micro-batch (all targets "
                             f"masked?); a step needs at least one counted term")
        # DDP averaged the gradients over ranks; undo that and divide by the global count instead.
        scale = self.env.world_size / count
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        loss_value = totals.pop("loss") / count
        if not math.isfinite(loss_value):
            self._fail("the loss", loss_value)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(grad_norm):
            self._fail("the gradient norm", grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        record = {"kind": "train", "step": self.step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                  "count": count}
        for key, value in totals.items():
            record[key] = value if key == "tokens" else value / count
        return record

    def _accumulate(self, totals: dict[str, torch.Tensor], loss: torch.Tensor, count: torch.Tensor,
                    metrics: dict[str, Any]) -> None:
        parts = {"loss": loss.detach().float() * count, "count": count}
        for key, value in metrics.items():
            if key not in ("count", "loss"):
                value = _number(value).to(self.device)
                parts[key] = value if key == "tokens" else value * count
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value

    def _fail(self, what: str, value: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(self.step + 1, what, value, self.last_checkpoint)

    # ---------------------------------------------------------------- evaluation, checkpoints
    def evaluate(self) -> dict[str, Any]:
        with eval_mode(self.model), torch.no_grad(), self._autocast():
            metrics = self.val_fn(self.model)
        return {"kind": "val", "step": self.step, **{k: float(v) for k, v in metrics.items()}}

    def save(self) -> Path:
        state = {"schedule": {**self.schedule.to_dict(), "lr": self.schedule(max(self.step - 1, 0))},
                 "data": self.batches.state_dict(), "train_config": self.config.to_dict()}
        state["model_config"] = self.model.config.to_dict()
        self.last_checkpoint = save_checkpoint(self.out_dir, self.step, self.model, self.optimizer,
                                               self.param_names, state, self.env, self.config.keep_last)
        return self.last_checkpoint

    def _due(self, interval: int) -> bool:
        return self.step == self.config.steps or (interval > 0 and self.step % interval == 0)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> list[dict[str, Any]]:
        """Train from the current step to ``config.steps``; return this call's records (train and val)."""
        records: list[dict[str, Any]] = []
        if self.env.is_main:
            save_json(self.out_dir / "train_config.json", self.config.to_dict())
        bar = tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.config.progress and self.env.is_main))
        try:
            while self.step < self.config.steps:
                start = time.perf_counter()
                record = self.train_step()
                record["time_s"] = time.perf_counter() - start
                if "tokens" in record:
                    record["tokens_per_s"] = record["tokens"] / record["time_s"]
                self._emit(record, records)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                **({"tok/s": f"{record['tokens_per_s']:.0f}"} if "tokens_per_s" in record else {}))
                if self.val_fn is not None and self._due(self.config.eval_interval):
                    self._emit(self.evaluate(), records)
                    self.plot()
                if self._due(self.config.checkpoint_interval):
                    self.save()
        finally:
            bar.close()
            self.plot()
        return records

    def _emit(self, record: dict[str, Any], records: list[dict[str, Any]]) -> None:
        records.append(record)
        if self.env.is_main:
            self.log.append(record)

    def plot(self) -> None:
        if self.env.is_main and self.log.path.is_file():
            plot_losses(self.log.read(), self.out_dir / "loss.png", title=f"{self.out_dir.name}: loss")


@torch.no_grad()
def mean_over_batches(model: nn.Module, loss_fn: LossFn, batches: Iterable[Any],
                      env: DistEnv | None = None) -> dict[str, float]:
    """``val_loss`` and ``val_<metric>`` for every metric ``loss_fn`` reports, each the mean over all
    counted terms of ``batches``, weighted as :meth:`Trainer.train_step` weighs a step (every rank
    passes its own share; the sums are reduced over ranks). The trainer's ``val_fn`` of every stage."""
    env = env or DistEnv.current()
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    for batch in batches:
        loss, metrics = loss_fn(model, move_to(batch, device))
        count = _number(metrics.get("count", 1.0)).to(device).double()
        terms = {"loss": loss, **{k: v for k, v in metrics.items() if k not in ("count", "tokens")}}
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + _number(value).to(device).double() * count
        sums["count"] = sums.get("count", 0.0) + count
    keys = sorted(sums)
    totals = dict(zip(keys, all_reduce_sum(torch.stack([sums[k] for k in keys]), env).tolist()))
    count = max(totals.pop("count"), 1.0)
    return {f"val_{key}": value / count for key, value in totals.items()}
