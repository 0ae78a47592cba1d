"""How a stage spends the hardware: the precision it computes in and what it compiles.

One small value, :class:`Speed`, travels from the command line (a stage's or the course's) to the
trainer and to the sampler, so that every stage follows one policy: the precision of
:mod:`minillama.precision` for training and sampling alike, and ``torch.compile``
(:mod:`minillama.compiler`) for the training step and the one-token decoding step, each switched
on where it pays back its compile time.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from .precision import PRECISIONS, check_precision


@dataclass(frozen=True)
class Speed:
    """``precision``: ``"auto"``, ``"fp32"`` or ``"bf16"``; ``compile_training``: compile the model
    the trainer steps; ``compile_decoding``: compile the one-token decoding step of sampling."""

    precision: str = "auto"
    compile_training: bool = False
    compile_decoding: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision, "Speed.precision")

    def training(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~minillama.train.TrainConfig`."""
        return {"precision": self.precision, "compile": self.compile_training}

    def sampling(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~minillama.chat.sample_responses` and :func:`~minillama.generate.generate`."""
        return {"precision": self.precision, "compile": self.compile_decoding}


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision``, ``--compile-training`` and ``--compile-decoding`` (read back with :func:`speed_from_args`)."""
    group = parser.add_argument_group("speed")
    group.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="auto: bf16 autocast where the device multiplies bf16 natively (CUDA with bf16, CPUs with "
                            "AVX512-BF16 or AMX), float32 elsewhere; fp32 / bf16 force either (default: %(default)s)")
    group.add_argument("--compile-training", action="store_true",
                       help="torch.compile the training step (seconds to compile; pays on long runs and GPUs)")
    group.add_argument("--compile-decoding", action="store_true",
                       help="torch.compile the one-token decoding step of sampling (seconds to compile; pays when "
                            "thousands of answers are sampled)")


def speed_from_args(args: argparse.Namespace) -> Speed:
    return Speed(args.precision, args.compile_training, args.compile_decoding)
