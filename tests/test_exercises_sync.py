"""exercises/ is generated from solutions/ and must stay in step with it; and the generator itself."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from minillama.grading.exercises import STUB, generate, make_exercise, notebook_bytes, strip_solutions

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"


def test_exercises_are_generated_from_the_current_solutions(tmp_path: Path) -> None:
    generate(SOLUTIONS, tmp_path)
    expected = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    actual = {p.name: p.read_bytes() for p in EXERCISES.glob("*.ipynb")}
    assert expected, "no solution notebooks found"
    stale = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    assert not stale, (f"exercises/ is out of date with solutions/ ({', '.join(stale)}): run `make exercises` "
                       f"and commit the result; never edit exercises/ by hand")


def test_each_solution_region_becomes_one_stub_at_its_indentation() -> None:
    source = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n"
              "    ### END SOLUTION\n\n\ndef g():\n    for i in range(3):\n        ### BEGIN SOLUTION\n"
              "        pass\n        ### END SOLUTION\n    return 0")
    assert strip_solutions(source) == (f"def f(x):\n    \"\"\"Doc.\"\"\"\n    {STUB}\n\n\ndef g():\n"
                                       f"    for i in range(3):\n        {STUB}\n    return 0")
    assert strip_solutions("x = 1\n") == "x = 1\n"


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n### END SOLUTION\n", "without a"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside the region"),
    ("x = 1  ### BEGIN SOLUTION\n", "alone on its line"),
])
def test_malformed_markers_are_errors_naming_the_line(source: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as error:
        strip_solutions(source, "03_rope.ipynb, cell 4")
    assert "03_rope.ipynb, cell 4, line" in str(error.value)


def _solution_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    code.execution_count = 3
    check = nbformat.v4.new_code_cell("print(f())")
    check.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), code, check]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def test_exercises_have_no_outputs_and_keep_everything_else() -> None:
    solution = _solution_notebook()
    exercise = make_exercise(solution, "01_demo.ipynb")
    assert [c.source for c in exercise.cells] == ["# Title", f"def f():\n    {STUB}", "print(f())"]
    assert all(c.outputs == [] and c.execution_count is None for c in exercise.cells if c.cell_type == "code")
    assert [c.id for c in exercise.cells] == ["cell-0", "cell-1", "cell-2"]
    assert exercise.metadata["minillama"]["generated_from"] == "solutions/01_demo.ipynb"
    assert solution.cells[1].outputs, "the solution notebook is not modified"


def test_generation_is_byte_for_byte_repeatable_and_prunes_only_its_own_files(tmp_path: Path) -> None:
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "01_demo.ipynb")
    first = generate(solutions, exercises)
    data = (exercises / "01_demo.ipynb").read_bytes()
    assert data == notebook_bytes(make_exercise(_solution_notebook(), "01_demo.ipynb"))
    second = generate(solutions, exercises)
    assert (first["written"], second["unchanged"]) == (["01_demo.ipynb"], ["01_demo.ipynb"])
    assert (exercises / "01_demo.ipynb").read_bytes() == data
    # A learner's own notebook in the folder stays; a generated one without a solution goes.
    nbformat.write(nbformat.v4.new_notebook(), exercises / "my_notes.ipynb")
    (solutions / "01_demo.ipynb").rename(solutions / "02_demo.ipynb")
    third = generate(solutions, exercises)
    assert third["removed"] == ["01_demo.ipynb"]
    assert sorted(p.name for p in exercises.glob("*.ipynb")) == ["02_demo.ipynb", "my_notes.ipynb"]
    with pytest.raises(ValueError, match="must differ"):
        generate(solutions, solutions)
