"""Copy what the chapters need from a course run into artifacts/course-<preset>/ (committed).

    .venv/bin/python tools/snapshot_course.py [runs/course] [artifacts/course-tiny]

Models are stored in bfloat16 (half the bytes; the chapters cast them back to float32), metrics
and plots as they are. Per-prompt stage results keep the labels and scores but not the response
texts beyond the first 200 prompts, to keep the repository small.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from minillama import load_model, save_model

MODELS = ("pretrain/model", "sft/model")
FILES = ("report.md", "timings.json", "loss.png", "tokenizer/tokenizer.model", "pretrain/metrics.jsonl",
         "pretrain/loss.png", "eval/metrics.json", "sft/sft_metrics.json", "sft/metrics.jsonl", "sft/loss.png",
         "rm_helpfulness/metrics.json", "rm_safety/metrics.json", "rejection/metrics.json", "rejection/rounds.png",
         "rejection/reward_vs_k.json", "rejection/reward_vs_k.png", "dpo/metrics.jsonl", "dpo/metrics.json",
         "dpo/loss.png", "dpo/pairs_by_class.json", "stages/changes.json", "rejection/threshold.json",
         "dpo_rm_pairs/metrics.json", "dpo_rm_pairs/metrics.jsonl")


def main(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for rel in FILES:
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)
    for rel in MODELS:
        if (src / rel / "model.safetensors").is_file():
            save_model(load_model(src / rel, torch.bfloat16), dst / rel)
    for path in sorted((src / "stages").glob("*.json")):
        if path.name == "changes.json":
            continue
        result = json.loads(path.read_text())
        per_prompt = result.get("per_prompt", {})
        if "response" in per_prompt:
            per_prompt["response"] = per_prompt["response"][:200]
        (dst / "stages").mkdir(parents=True, exist_ok=True)
        (dst / "stages" / path.name).write_text(json.dumps(result, sort_keys=True) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else Path("runs/course"), Path(args[1]) if len(args) > 1 else Path("artifacts/course-tiny"))
