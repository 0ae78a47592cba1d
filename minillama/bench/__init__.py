"""``minillama bench <benchmark>``: benchmarks whose results (json + png) the chapters show.

Each benchmark is a module with ``main(argv) -> int`` and its own argparse ``--help``; all of
them time their calls and record the machine through :mod:`minillama.bench.harness`.
"""

from __future__ import annotations

import importlib
import sys

# benchmark -> (module, one-line summary)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "attention": ("minillama.bench.attention",
                  "attention TFLOP/s and peak memory: Triton FlashAttention-2 vs SDPA vs einops"),
    "model": ("minillama.bench.model",
              "model throughput: training and decoding tokens/s, minillama vs transformers"),
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    lines = ["usage: minillama bench <benchmark> [options]   (minillama bench <benchmark> --help)", "",
             "benchmarks:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"minillama bench: unknown benchmark {name!r}; allowed: {list(BENCHMARKS)}\n\n{usage()}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    return int(module.main(rest) or 0)
