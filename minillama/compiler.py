"""``torch.compile`` where it can run, eager where it cannot, said in one line.

Inductor, torch.compile's default backend, writes C++ for a CPU and Triton for a GPU, and builds it
with the machine's C++ compiler. Without one, compilation would fail at the first call, deep in a
traceback; :func:`compile_or_eager` checks first and falls back to the eager function with one line
on stderr. Whether compiling pays back its seconds depends on the work: see the speed chapter
(``notebooks/08_generation.ipynb``) for what it buys each stage on a CPU.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from typing import Any, Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def compiler_missing(device: torch.device | str) -> str | None:
    """Why torch.compile cannot build kernels for ``device`` here, or ``None`` when it can."""
    device = torch.device(device)
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "Triton is not installed"
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(name) for name in candidates):
        return f"no C++ compiler found (looked for {', '.join(candidates)}; set CXX or install g++)"
    return None


def compile_or_eager(fn: F, enabled: bool, device: torch.device | str, what: str, **options: Any) -> F:
    """``torch.compile(fn, **options)`` when ``enabled`` and possible on ``device``; else ``fn`` itself
    (with one line on stderr saying why, when compiling was asked for)."""
    if not enabled:
        return fn
    reason = compiler_missing(device)
    if reason is not None:
        print(f"{what}: torch.compile is not available ({reason}); running eager", file=sys.stderr)
        return fn
    return torch.compile(fn, **options)
