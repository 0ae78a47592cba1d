"""``minillama <command> ...``: one entry point; each command lives in the module it runs.

Every command module exposes ``main(argv: list[str] | None) -> int`` with an argparse ``--help``.
What a user can get wrong (a missing folder, a corrupt model file, a bad value) surfaces as a
``ValueError`` or an ``OSError`` that names the file or the setting; the command prints it as one
line, ``minillama <command>: error: ...``, and exits with status 2, as argparse does for bad
arguments. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "grade": ("minillama.grading", "grade an exercise notebook"),
    "bench": ("minillama.bench", "benchmarks (attention kernels, model throughput)"),
    "data": ("minillama.data.files", "generate TinyWorld text, chat tasks and splits"),
    "tokenizer": ("minillama.tokenizer", "train a SentencePiece BPE tokenizer"),
    "pretrain": ("minillama.stages.pretrain", "pretrain a model on token files"),
    "sft": ("minillama.stages.sft", "supervised fine-tuning on chat tasks (loss on answer tokens only)"),
    "reward": ("minillama.stages.reward", "train a helpfulness or safety reward model"),
    "rejection": ("minillama.stages.rejection", "rejection-sampling fine-tuning and the reward-vs-K study"),
    "dpo": ("minillama.stages.dpo", "direct preference optimisation on preference pairs"),
    "course": ("minillama.course.pipeline", "run the end-to-end course pipeline and write the report"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: minillama <command> [options]   (minillama <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"minillama: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except (ValueError, OSError) as err:
        print(f"minillama {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
