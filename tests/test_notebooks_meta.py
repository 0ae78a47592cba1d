"""The committed notebooks are executed, clean and linked; the executor that writes them works.

nbval (``make test``) re-runs every notebook and compares outputs. These checks catch, without a
kernel, what nbval would not: a notebook saved before it was run top to bottom in a fresh kernel,
run with another kernel, saved with an error in it, or missing from the course map in 00_tour.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from minillama import notebook_tools

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "notebooks" / "00_tour.ipynb"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    # nbclient does not run blank cells, so they carry no execution count.
    return [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_executed_top_to_bottom_in_one_fresh_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    counts = [cell.execution_count for cell in _code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{_id(path)}: execution counts {counts}; re-run it with "
        f"`python -m minillama.notebook_tools {_id(path)}`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_kernel_is_python3(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", _id(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_no_error_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    errors = [(i, out.get("ename"), out.get("evalue")) for i, cell in enumerate(nb.cells)
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, f"{_id(path)}: error outputs in cells {errors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_nbval_markers_are_recognised(path: Path) -> None:
    # nbval only honours a marker alone on its comment line; "# NBVAL_IGNORE_OUTPUT (why)" is ignored.
    nb = nbformat.read(path, as_version=4)
    markers = {"NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION", "NBVAL_SKIP"}
    bad = [line.strip() for cell in _code_cells(nb) for line in cell.source.splitlines()
           if line.strip().startswith("#") and "NBVAL_" in line and line.strip().lstrip("#").strip() not in markers]
    assert not bad, f"{_id(path)}: nbval would not recognise {bad}; put the marker alone on its line"


def _tour_links() -> list[str]:
    nb = nbformat.read(TOUR, as_version=4)
    text = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    return [target for target in MARKDOWN_LINK.findall(text) if "://" not in target]


@pytest.mark.skipif(not TOUR.exists(), reason="notebooks/00_tour.ipynb not written yet")
def test_tour_links_every_chapter() -> None:
    linked = {(TOUR.parent / target.split("#")[0]).resolve() for target in _tour_links()}
    chapters = {path.resolve() for path in (ROOT / "notebooks").glob("*.ipynb")} - {TOUR.resolve()}
    missing = sorted(path.name for path in chapters - linked)
    assert not missing, f"00_tour's course map does not link {missing}"


@pytest.mark.skipif(not TOUR.exists(), reason="notebooks/00_tour.ipynb not written yet")
def test_tour_links_resolve() -> None:
    broken = [target for target in _tour_links() if not (TOUR.parent / target.split("#")[0]).exists()]
    assert not broken, f"00_tour links to files that do not exist: {broken}"


# ---------------------------------------------------------------------------- the executor
def _write_notebook(path: Path, *sources: str) -> None:
    cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)


def test_execute_writes_outputs_in_order(tmp_path: Path) -> None:
    path = tmp_path / "probe.ipynb"
    _write_notebook(path, "import os, pathlib\nprint(os.environ['PYTHONHASHSEED'], pathlib.Path.cwd().name)",
                    "", "6 * 7")
    seconds = notebook_tools.execute(path, timeout=120)
    nb = nbformat.read(path, as_version=4)
    assert seconds > 0
    assert nb.metadata.kernelspec.name == "python3"
    assert [cell.execution_count for cell in _code_cells(nb)] == [1, 2]
    assert nb.cells[0].outputs[0].text == f"0 {tmp_path.name}\n"  # fixed hash seed, notebook's folder
    assert nb.cells[2].outputs[0].data["text/plain"] == "42"
    assert all("execution" not in cell.metadata for cell in nb.cells)  # no per-run timing metadata


def test_execute_leaves_a_failing_notebook_untouched(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    path = tmp_path / "broken.ipynb"
    _write_notebook(path, "print('before')", "raise ValueError('boom')")
    before = path.read_bytes()
    with pytest.raises(CellExecutionError, match="boom"):
        notebook_tools.execute(path, timeout=120)
    assert path.read_bytes() == before


@pytest.mark.parametrize("bad, message", [("notes.txt", "expects a .ipynb"), ("nb.ipynb", "timeout")])
def test_execute_rejects_bad_arguments(tmp_path: Path, bad: str, message: str) -> None:
    timeout = 0 if message == "timeout" else 10
    with pytest.raises(ValueError, match=message):
        notebook_tools.execute(tmp_path / bad, timeout=timeout)
