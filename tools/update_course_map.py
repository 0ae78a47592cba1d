"""Link every chapter that exists in the course map of notebooks/00_tour.ipynb (and nowhere else).

    .venv/bin/python tools/update_course_map.py

A row's notebook column links notebooks/NN_*.ipynb when it exists, else says "coming"; the exercise
column links exercises/NN_*.ipynb when it exists. Only the markdown cell is touched, so the
notebook's outputs stay as they were.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "notebooks" / "00_tour.ipynb"


def link_row(line: str) -> str:
    cells = line.split("|")
    number = cells[1].strip()
    if not re.fullmatch(r"\d\d", number) or number == "00":
        return line
    notebook = sorted((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    exercise = sorted((ROOT / "exercises").glob(f"{number}_*.ipynb"))
    cells[4] = f" [{notebook[0].name}]({notebook[0].name}) " if notebook else " coming "
    cells[5] = f" [exercise](../exercises/{exercise[0].name}) " if exercise else "  "
    return "|".join(cells)


def main() -> None:
    nb = nbformat.read(TOUR, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## Course map"):
            cell.source = "\n".join(link_row(line) if line.startswith("| ") else line
                                    for line in cell.source.split("\n"))
    nbformat.write(nb, TOUR)


if __name__ == "__main__":
    main()
