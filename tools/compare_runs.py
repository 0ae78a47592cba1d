"""Compare two course runs: every number of every json result, the report's tables, the models' weights.

    .venv/bin/python tools/compare_runs.py RUN_A RUN_B [--show N]

A refactoring that keeps the pipeline's behaviour leaves two fresh runs of ``make course`` (one
before the change, one after) equal in all of this. What only measures the machine (seconds,
tokens/s) or names a path is left out. Prints one line per difference (at most ``--show`` per
file) and a summary; exits 1 when anything differs, so that a script can gate on it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from minillama.hf import minillama_name

# Keys that record the machine or the run's own paths, not its results.
MACHINE_KEYS = frozenset({"seconds", "tokens_per_s", "time_s", "tokens_per_s_median", "init", "data", "model",
                          "tokenizer", "progress"})


def differences(a: Any, b: Any, path: str) -> list[str]:
    """Where two json values differ, key by key and item by item."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in MACHINE_KEYS:
                continue
            if key not in a or key not in b:
                out.append(f"{path}/{key}: only in {'B' if key in b else 'A'}")
            else:
                out += differences(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if a == b or both_nan else [f"{path}: {str(a)[:60]!r} vs {str(b)[:60]!r}"]


def json_values(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def report_tables(path: Path) -> list[str]:
    """The report's table rows, but those of the time-per-stage table and the training speed."""
    lines = path.read_text().splitlines()
    timing = next((i for i, line in enumerate(lines) if line.startswith("## Time per stage")), len(lines))
    return [line for line in lines[:timing] if line.startswith("|") and "tokens/s" not in line]


def weights(path: Path) -> dict[str, torch.Tensor]:
    """A model file's tensors under minillama's names, whether it holds those or Hugging Face's."""
    tensors = load_file(str(path))
    hf_names = any(name.startswith("model.") for name in tensors)
    return {minillama_name(name) if hf_names else name: tensor for name, tensor in tensors.items()}


def same_weights(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def compare(a: Path, b: Path, show: int = 5) -> int:
    """Print the differences between runs ``a`` and ``b``; returns how many there are."""
    total = 0
    results = sorted(p.relative_to(a) for p in a.rglob("*.json*") if "checkpoints" not in p.parts
                     and p.suffix in (".json", ".jsonl") and p.name not in ("timings.json", "train_config.json"))
    for rel in results:
        found = [f"{rel}: missing in B"] if not (b / rel).is_file() else differences(
            json_values(a / rel), json_values(b / rel), str(rel))
        total += len(found)
        for line in found[:show]:
            print(line)
    models = sorted(p.relative_to(a) for p in a.rglob("model.safetensors") if "checkpoints" not in p.parts)
    for rel in models:
        if not (b / rel).is_file() or not same_weights(a / rel, b / rel):
            print(f"{rel}: weights differ")
            total += 1
    tables = [(x, y) for x, y in zip(report_tables(a / "report.md"), report_tables(b / "report.md")) if x != y]
    for x, y in tables[:show]:
        print(f"report.md: {x}\n       vs: {y}")
    total += len(tables)
    print(f"{len(results)} json files, {len(models)} models and the report's tables compared: {total} differences")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path, help="a course run folder (what `make course` writes to runs/course)")
    parser.add_argument("run_b", type=Path, help="another one")
    parser.add_argument("--show", type=int, default=5, help="differences printed per file")
    args = parser.parse_args(argv)
    return 1 if compare(args.run_a, args.run_b, args.show) else 0


if __name__ == "__main__":
    sys.exit(main())
