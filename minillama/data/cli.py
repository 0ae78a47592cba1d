"""``minillama data``: write a TinyWorld's text, chat tasks, safety tasks and cloze prompts to a folder.

Files (one world per folder; the same arguments give byte-identical files):

* ``{train,val,test}.txt``: pretraining text, documents separated by blank lines;
* ``chat_{split}.jsonl``, ``safety_{split}.jsonl``: one task per line (``Task.to_dict()``), which
  ``Oracle.from_jsonl`` reads back to score responses;
* ``cloze_{split}.jsonl``: fact-recall prompts;
* ``world.json``: the world itself (people, facts, lore); ``manifest.json``: sizes and sha256 of
  every file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from .splits import SPLITS
from .world import SIZES, TinyWorld


def _write(path: Path, text: str) -> None:
    """Write to a temporary file and rename it over ``path``: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minillama data",
        description="Generate a TinyWorld: pretraining text, chat and safety tasks with reference answers, "
                    "and cloze prompts, split into train/val/test with no prompt shared between splits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to write into (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="world seed: the same seed gives the same files, byte for byte")
    p.add_argument("--chars", type=int, default=3_000_000, help="characters of training text (train.txt)")
    p.add_argument("--eval-chars", type=int, default=150_000, help="characters of text in each of val.txt and test.txt")
    p.add_argument("--chat", type=int, default=20_000, help="chat tasks in chat_train.jsonl")
    p.add_argument("--eval-chat", type=int, default=1_000,
                   help="chat tasks in each of chat_val.jsonl and chat_test.jsonl")
    p.add_argument("--safety", type=int, default=2_000,
                   help="safety tasks (unsafe and borderline) in safety_train.jsonl")
    p.add_argument("--eval-safety", type=int, default=300,
                   help="safety tasks in each of safety_val.jsonl and safety_test.jsonl")
    p.add_argument("--borderline", type=float, default=0.5,
                   help="share of the safety tasks that are harmless look-alikes (for measuring false refusals)")
    for name, (default, lo, hi) in SIZES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, dest=name,
                       help=f"world size: {name.removeprefix('n_')} ({lo} to {hi})")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("chars", "eval_chars", "chat", "eval_chat", "safety", "eval_safety"):
        if getattr(args, name) < 0:
            raise SystemExit(f"minillama data: --{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    world = TinyWorld(seed=args.seed, **{name: getattr(args, name) for name in SIZES})
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    jobs = []
    for split in SPLITS:
        train = split == "train"
        jobs += [
            (f"{split}.txt", lambda s=split, t=train: world.pretraining_text(
                args.chars if t else args.eval_chars, s) + "\n"),
            (f"chat_{split}.jsonl", lambda s=split, t=train: _jsonl(
                x.to_dict() for x in world.chat_tasks(s, args.chat if t else args.eval_chat))),
            (f"safety_{split}.jsonl", lambda s=split, t=train: _jsonl(
                x.to_dict() for x in world.unsafe_tasks(s, args.safety if t else args.eval_safety, args.borderline))),
            (f"cloze_{split}.jsonl", lambda s=split: _jsonl(dataclasses.asdict(c) for c in world.cloze_prompts(s))),
        ]
    jobs.append(("world.json", lambda: json.dumps(world.to_dict(), indent=1, sort_keys=True) + "\n"))

    manifest = {"seed": args.seed, "files": {}}
    for name, make in tqdm(jobs, desc="minillama data", disable=args.quiet):
        content = make()
        _write(args.out / name, content)
        data = content.encode("utf-8")
        lines = content.count("\n")
        manifest["files"][name] = {"bytes": len(data), "lines": lines, "sha256": hashlib.sha256(data).hexdigest()}
    _write(args.out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    if not args.quiet:
        elapsed = time.perf_counter() - start
        total = sum(f["bytes"] for f in manifest["files"].values())
        print(f"wrote {len(jobs) + 1} files, {total / 1e6:.1f} MB, to {args.out} in {elapsed:.1f} s "
              f"({len(world.facts)} facts, {len(world.people)} people)")
    return 0
