"""A TinyWorld on disk: ``minillama data`` writes one folder, and every stage reads its task files back.

Files (one world per folder; the same arguments give byte-identical files):

* ``{train,val,test}.txt``: pretraining text, documents separated by blank lines;
* ``chat_{split}.jsonl``, ``safety_{split}.jsonl``: one task per line (``Task.to_dict()``);
* ``cloze_{split}.jsonl``: fact-recall prompts;
* ``world.json``: the world itself (people, facts, lore); ``manifest.json``: sizes and sha256 of
  every file.

The readers (:func:`load_tasks`, :func:`val_tasks`) and :func:`subset` are what the stages share:
which prompts a stage trains or is scored on is a choice made here, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..fileio import jsonl, read_records, write_text
from .splits import SPLITS
from .tasks import TASK_FIELDS, TASK_REQUIRED, Task
from .world import SIZES, TinyWorld

def write_dataset(out: str | Path, seed: int = 0, chars: int = 3_000_000, eval_chars: int = 150_000,
                  chat: int = 20_000, eval_chat: int = 1_000, safety: int = 2_000, eval_safety: int = 300,
                  borderline: float = 0.5, progress: bool = True, **sizes: int) -> dict[str, Any]:
    """Write a TinyWorld's folder (module docstring) and return its manifest. ``chars``, ``chat`` and
    ``safety`` size the train split; ``eval_*`` each of val and test; ``sizes`` the world
    (``n_people=...``, see :data:`~minillama.data.world.SIZES`)."""
    counts = dict(chars=chars, eval_chars=eval_chars, chat=chat, eval_chat=eval_chat, safety=safety,
                  eval_safety=eval_safety)
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    world = TinyWorld(seed=seed, **sizes)
    out = Path(out)
    jobs: list[tuple[str, Callable[[], str]]] = []
    for split in SPLITS:
        train = split == "train"
        jobs += [
            (f"{split}.txt", lambda s=split, t=train: world.pretraining_text(chars if t else eval_chars, s) + "\n"),
            (f"chat_{split}.jsonl", lambda s=split, t=train: jsonl(
                x.to_dict() for x in world.chat_tasks(s, chat if t else eval_chat))),
            (f"safety_{split}.jsonl", lambda s=split, t=train: jsonl(
                x.to_dict() for x in world.unsafe_tasks(s, safety if t else eval_safety, borderline))),
            (f"cloze_{split}.jsonl", lambda s=split: jsonl(dataclasses.asdict(c) for c in world.cloze_prompts(s))),
        ]
    jobs.append(("world.json", lambda: json.dumps(world.to_dict(), indent=1, sort_keys=True) + "\n"))
    manifest: dict[str, Any] = {"seed": seed, "files": {}}
    for name, make in tqdm(jobs, desc="minillama data", disable=not progress):
        content = make()
        write_text(out / name, content)
        data = content.encode("utf-8")
        manifest["files"][name] = {"bytes": len(data), "lines": content.count("\n"),
                                   "sha256": hashlib.sha256(data).hexdigest()}
    write_text(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


# ---------------------------------------------------------------------------------- reading back
def read_tasks(*paths: str | Path) -> list[Task]:
    """The tasks of task files, in order."""
    return [task for path in paths for task in read_records(path, Task.from_dict, "task", TASK_FIELDS, TASK_REQUIRED)]


def load_tasks(data_dir: str | Path, *names: str) -> list[Task]:
    """The tasks of ``<data_dir>/<name>.jsonl`` for each name (``"chat_train"``, ``"safety_val"``, ...)."""
    paths = [Path(data_dir) / f"{name}.jsonl" for name in names]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: no such file; the data folder must be one written by `minillama data`")
    return read_tasks(*paths)


SAMPLE_FIELDS: tuple[str, ...] = ("prompt", "samples", "reward", "oracle")


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a rejection-sampling round's ``samples.jsonl`` (DPO reads them too), each
    checked: a prompt, a list of samples and as many rewards and oracle scores (a ``ValueError``
    names the file, line and field otherwise)."""
    def check(row: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(row["samples"], list) or not all(isinstance(x, str) for x in row["samples"]):
            raise ValueError("field 'samples' must be a list of strings")
        for field in ("reward", "oracle"):
            if not isinstance(row[field], list) or len(row[field]) != len(row["samples"]):
                raise ValueError(f"field {field!r} must be a list of one number per sample")
        return row
    return read_records(path, check, "sample row", SAMPLE_FIELDS, SAMPLE_FIELDS)


def val_tasks(data_dir: str | Path, n_chat: int, n_safety: int) -> list[Task]:
    """The first ``n_chat`` chat and ``n_safety`` safety validation tasks of a data folder: the
    held-out prompts the oracle scores a stage on."""
    return load_tasks(data_dir, "chat_val")[:n_chat] + load_tasks(data_dir, "safety_val")[:n_safety]


def subset(tasks: list[Task], n: int | None, seed: int, stream: int = 7) -> list[Task]:
    """``n`` of ``tasks`` drawn at random, in their original order (all of them when ``n`` is None or
    not smaller). ``stream`` keeps the draws of different stages apart for the same ``seed``."""
    if n is None or n >= len(tasks):
        return tasks
    keep = np.sort(np.random.default_rng([seed, stream]).choice(len(tasks), n, replace=False))
    return [tasks[i] for i in keep]


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama data",
        description="Generate a TinyWorld: pretraining text, chat and safety tasks with reference answers, "
                    "and cloze prompts, split into train/val/test with no prompt shared between splits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = {name: arg.default for name, arg in inspect.signature(write_dataset).parameters.items()}
    p.add_argument("--out", type=Path, required=True, help="folder to write into (created if missing)")
    p.add_argument("--seed", type=int, default=defaults["seed"],
                   help="world seed: the same seed gives the same files, byte for byte")
    p.add_argument("--chars", type=int, default=defaults["chars"], help="characters of training text (train.txt)")
    p.add_argument("--eval-chars", type=int, default=defaults["eval_chars"],
                   help="characters of text in each of val.txt and test.txt")
    p.add_argument("--chat", type=int, default=defaults["chat"], help="chat tasks in chat_train.jsonl")
    p.add_argument("--eval-chat", type=int, default=defaults["eval_chat"],
                   help="chat tasks in each of chat_val.jsonl and chat_test.jsonl")
    p.add_argument("--safety", type=int, default=defaults["safety"],
                   help="safety tasks (unsafe and borderline) in safety_train.jsonl")
    p.add_argument("--eval-safety", type=int, default=defaults["eval_safety"],
                   help="safety tasks in each of safety_val.jsonl and safety_test.jsonl")
    p.add_argument("--borderline", type=float, default=defaults["borderline"],
                   help="share of the safety tasks that are harmless look-alikes (for measuring false refusals)")
    for name, (default, lo, hi) in SIZES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, dest=name,
                       help=f"world size: {name.removeprefix('n_')} ({lo} to {hi})")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    out, quiet = args.pop("out"), args.pop("quiet")
    start = time.perf_counter()
    manifest = write_dataset(out, progress=not quiet, **args)
    if not quiet:
        total = sum(f["bytes"] for f in manifest["files"].values())
        print(f"wrote {len(manifest['files']) + 1} files, {total / 1e6:.1f} MB, to {out} in "
              f"{time.perf_counter() - start:.1f} s")
    return 0
