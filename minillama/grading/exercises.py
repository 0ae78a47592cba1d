"""Make exercise notebooks from solution notebooks: ``python -m minillama.grading.exercises solutions exercises``.

Each ``solutions/*.ipynb`` is copied to the output folder with every region of a code cell from
a ``### BEGIN SOLUTION`` line to its ``### END SOLUTION`` line (markers included) replaced by
one ``raise NotImplementedError()`` at the marker's indentation, as nbgrader does.

*All* outputs are cleared, not only those of the cells that changed: the self-check cells below a
stripped function would otherwise show the solution's results (and success) for code the
learner has not written yet, and printed values can give an answer away.

The bytes written depend only on the input (nbformat's sorted-key JSON; cell ids are kept), so
regenerating an unchanged solution gives an identical file and ``tests/test_exercises_sync.py``
can compare. A generated notebook carries ``metadata.minillama.generated_from``; a stale one
(whose solution is gone) is removed, and files without that mark are never touched.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = "raise NotImplementedError()"
GENERATOR = "minillama.grading.exercises"


def strip_solutions(source: str, where: str = "cell") -> str:
    """``source`` with each marked region replaced by :data:`STUB`; ``ValueError`` naming ``where``
    for a marker that is unmatched, nested or not alone on its line."""
    out: list[str] = []
    inside_from: int | None = None
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if (BEGIN in line or END in line) and marker not in (BEGIN, END):
            raise ValueError(f"{where}, line {number}: a solution marker must be alone on its line, got {line!r}")
        if marker == BEGIN:
            if inside_from is not None:
                raise ValueError(f"{where}, line {number}: {BEGIN!r} inside the region opened at line {inside_from}")
            inside_from = number
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif marker == END:
            if inside_from is None:
                raise ValueError(f"{where}, line {number}: {END!r} without a {BEGIN!r} before it")
            inside_from = None
        elif inside_from is None:
            out.append(line)
    if inside_from is not None:
        raise ValueError(f"{where}, line {inside_from}: {BEGIN!r} is never closed by {END!r}")
    return "\n".join(out)


def make_exercise(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise version of solution notebook ``nb`` (``name`` is its file name)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"{name}, cell {index}")
            cell.outputs = []
            cell.execution_count = None
    nb.metadata["minillama"] = {"generated_from": f"solutions/{name}", "generator": GENERATOR}
    return nb


def notebook_bytes(nb: nbformat.NotebookNode) -> bytes:
    """The file contents nbformat writes for ``nb``: sorted keys, one-space indent, final newline."""
    text = nbformat.writes(nb, version=4)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def is_generated(path: Path) -> bool:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - not a notebook we could have written
        return False
    return nb.metadata.get("minillama", {}).get("generator") == GENERATOR


def generate(solutions: str | Path, exercises: str | Path) -> dict[str, list[str]]:
    """Write an exercise for every ``*.ipynb`` in ``solutions`` into ``exercises``.

    Returns ``{"written": [...], "unchanged": [...], "removed": [...]}`` (file names); files
    whose bytes would not change are not rewritten."""
    solutions, exercises = Path(solutions), Path(exercises)
    if not solutions.is_dir():
        raise ValueError(f"solutions folder {str(solutions)!r} does not exist")
    if solutions.resolve() == exercises.resolve():
        raise ValueError("the exercises folder must differ from the solutions folder")
    exercises.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[str]] = {"written": [], "unchanged": [], "removed": []}
    sources = sorted(solutions.glob("*.ipynb"))
    for source in sources:
        data = notebook_bytes(make_exercise(nbformat.read(source, as_version=4), source.name))
        target = exercises / source.name
        if target.is_file() and target.read_bytes() == data:
            done["unchanged"].append(source.name)
            continue
        target.write_bytes(data)
        done["written"].append(source.name)
    names = {s.name for s in sources}
    for stale in sorted(exercises.glob("*.ipynb")):
        if stale.name not in names and is_generated(stale):
            stale.unlink()
            done["removed"].append(stale.name)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillama.grading.exercises",
                                     description="Make exercise notebooks from solution notebooks.")
    parser.add_argument("solutions", type=Path, help="folder of solution notebooks (solutions)")
    parser.add_argument("exercises", type=Path, help="folder to write the exercises to (exercises)")
    args = parser.parse_args(argv)
    try:
        done = generate(args.solutions, args.exercises)
    except ValueError as exc:
        print(f"exercises: {exc}", file=sys.stderr)
        return 1
    for kind in ("written", "removed"):
        for name in done[kind]:
            print(f"{kind} {args.exercises / name}")
    print(f"exercises: {sum(map(len, done.values())) - len(done['removed'])} notebooks, "
          f"{len(done['written'])} written, {len(done['unchanged'])} unchanged, {len(done['removed'])} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
