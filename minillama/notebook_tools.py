"""(Re)execute course notebooks in place, the way nbval will check them.

``python -m minillama.notebook_tools notebooks/*.ipynb`` runs each notebook top to bottom in a
fresh ``python3`` kernel started in the notebook's folder, and writes the outputs back. Everything
that could make two runs differ is pinned: the hash seed, the matplotlib backend (inline, so that
figures are outputs) and the metadata (no per-cell timings), so re-running an unchanged notebook
gives an unchanged file apart from the images' bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from tqdm.auto import tqdm

KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}


def kernel_env() -> dict[str, str]:
    """The environment of the kernel: ours, with a fixed hash seed (set and dict order of str keys)
    and no MPLBACKEND, which would otherwise stop the inline backend from showing figures."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONHASHSEED"] = "0"
    return env


def execute(path: str | Path, timeout: int = 600, kernel_name: str = KERNEL_NAME) -> float:
    """Run the notebook at ``path`` top to bottom and save it with its new outputs.

    Returns the wall-clock seconds the run took. A cell that raises stops the run and re-raises
    (nbclient's ``CellExecutionError``) without touching the file."""
    path = Path(path)
    if path.suffix != ".ipynb":
        raise ValueError(f"execute() expects a .ipynb file, got {str(path)!r}")
    if timeout < 1:
        raise ValueError(f"timeout must be >= 1 second, got {timeout}")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC, name=kernel_name)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    client.execute(env=kernel_env())
    seconds = time.perf_counter() - start
    for cell in nb.cells:  # nothing per-run may stay in the file
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillama.notebook_tools",
                                     description="Execute notebooks in place (outputs committed, checked by nbval).")
    parser.add_argument("notebooks", nargs="+", type=Path, help=".ipynb files to execute")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook(s): {missing}")
    for path in tqdm(args.notebooks, desc="notebooks", unit="nb"):
        seconds = execute(path, timeout=args.timeout)
        tqdm.write(f"{path}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
