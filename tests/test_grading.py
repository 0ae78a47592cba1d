"""The grader: full marks for the solutions, zero for the untouched exercises, lost points for each
deliberately wrong implementation in tests/grading_fixtures/, and no crash or hang on hostile code.

Most tests run the checks in-process, on the namespace a notebook's cells leave behind (the same
check code the grader sends to the learner's kernel, milliseconds per check). The tests marked
slow run the real grader: a Jupyter kernel per notebook, as ``minillama grade`` does.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import linecache
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch

from minillama import cli
from minillama.grading.check import CheckFailed, Learner, expect_equal, expect_tensor
from minillama.grading.checks import CHAPTERS, chapter_checks, chapter_of
from minillama.grading.grade import CheckResult, GradeReport, grade_notebook
from minillama.grading.runner import BoundedText, run_check
from minillama.grading.session import CellRun

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
FIXTURES = Path(__file__).resolve().parent / "grading_fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("ch*.py"))


def notebook(folder: Path, chapter: str) -> Path:
    (path,) = folder.glob(f"{chapter}_*.ipynb")
    return path


@functools.lru_cache(maxsize=None)
def _namespace(path: Path) -> dict[str, Any]:
    """What running every code cell of ``path`` leaves defined (cells that raise are skipped past,
    as in a kernel; their prints are swallowed)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                # Each cell gets a source file of its own in linecache, as in IPython, so that
                # inspect.getsource works on the functions it defines (triton.jit reads a kernel's source).
                filename = f"<{path.parent.name}/{path.name}, cell {index}>"
                linecache.cache[filename] = (len(cell.source), None, cell.source.splitlines(True), filename)
                try:
                    exec(compile(cell.source, filename, "exec"), namespace)
                except Exception:  # noqa: BLE001 - an exercise's self-checks raise NotImplementedError
                    pass
    return namespace


def namespace_of(path: Path) -> dict[str, Any]:
    return dict(_namespace(path))  # a copy: tests replace functions in it


def run_all(chapter: str, namespace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.name: run_check(chapter, c.name, namespace) for c in chapter_checks(chapter)}


def fixture_chapter(path: Path) -> str:
    return path.name[2:4]


def load_fixture(path: Path, namespace: dict[str, Any]) -> set[str]:
    """Define the fixture's wrong function(s) in ``namespace``; return the checks it must fail."""
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace.pop("EXPECT_FAIL")


# ---------------------------------------------------------------------------- registry and layout
@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_every_graded_chapter_has_a_solution_an_exercise_and_wrong_implementations(chapter: str) -> None:
    solution = notebook(SOLUTIONS, chapter)
    assert notebook(EXERCISES, chapter).name == solution.name
    assert solution.read_text().count("### BEGIN SOLUTION") >= 2, "at least two graded functions per chapter"
    assert len(chapter_checks(chapter)) >= 4
    assert sum(fixture_chapter(f) == chapter for f in FIXTURE_FILES) >= 2, "at least two wrong implementations"


def test_chapter_is_read_from_the_file_name() -> None:
    assert chapter_of("exercises/03_rope.ipynb") == "03"
    assert chapter_of("/home/me/06_the_llama_model-Copy1.ipynb") == "06"
    for name in ("rope.ipynb", "3_rope.ipynb", "99_unknown.ipynb"):
        with pytest.raises(ValueError, match="graded chapters"):
            chapter_of(name)


# ---------------------------------------------------------------------------- the checks, in-process
@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_solutions_pass_every_check(chapter: str) -> None:
    results = run_all(chapter, namespace_of(notebook(SOLUTIONS, chapter)))
    failed = {name: r["message"] for name, r in results.items() if not r["passed"]}
    assert not failed
    assert sum(r["earned"] for r in results.values()) == chapter_checks(chapter).max_score


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_untouched_exercises_fail_every_check_as_not_implemented(chapter: str) -> None:
    results = run_all(chapter, namespace_of(notebook(EXERCISES, chapter)))
    for name, r in results.items():
        assert not r["passed"] and r["earned"] == 0, name
        assert "is not implemented yet" in r["message"], (name, r["message"])
        assert r["hint"] == "", "a hint about the maths does not help with a function not written yet"


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_a_wrong_implementation_fails_exactly_the_checks_about_its_mistake(fixture: Path) -> None:
    chapter = fixture_chapter(fixture)
    namespace = namespace_of(notebook(SOLUTIONS, chapter))
    expected = load_fixture(fixture, namespace)
    assert expected <= {c.name for c in chapter_checks(chapter)}
    results = run_all(chapter, namespace)
    failed = {name for name, r in results.items() if not r["passed"]}
    assert failed == expected
    for name in failed:  # a wrong answer gets the check's hint, and the observed difference
        assert results[name]["hint"] and results[name]["message"], name


def test_check_results_repeat_exactly() -> None:
    namespace = namespace_of(notebook(SOLUTIONS, "03"))
    load_fixture(FIXTURES / "ch03_adjacent_pairs.py", namespace)
    assert run_all("03", namespace) == run_all("03", namespace)


def test_checks_swap_in_the_reference_for_other_graded_functions_and_put_them_back() -> None:
    namespace = namespace_of(notebook(SOLUTIONS, "04"))
    load_fixture(FIXTURES / "ch04_mask_hides_self.py", namespace)
    wrong_mask = namespace["causal_mask"]
    assert run_check("04", "gqa_attention_multi_head", namespace)["passed"]  # ran with the reference mask
    assert namespace["causal_mask"] is wrong_mask
    learner = Learner({})
    with learner.using_references(helper=len):
        assert learner.namespace == {"helper": len}
    assert learner.namespace == {}


# ---------------------------------------------------------------------------- robustness, in-process
def _rope_namespace(**source: str) -> dict[str, Any]:
    namespace = namespace_of(notebook(SOLUTIONS, "03"))
    for code in source.values():
        exec(code, namespace)
    return namespace


def test_an_infinite_loop_times_out() -> None:
    namespace = _rope_namespace(loop="def rope_inv_freq(head_dim, theta=10000.0):\n    while True:\n        pass\n")
    start = time.monotonic()
    result = run_check("03", "rope_inv_freq_matches_reference", namespace, timeout_s=0.3)
    assert time.monotonic() - start < 5
    assert not result["passed"] and result["message"].startswith("timed out after 0.3 s")


def test_a_huge_print_is_truncated_and_does_not_cost_points() -> None:
    namespace = _rope_namespace(spam="_apply = apply_rope\n"
                                     "def apply_rope(x, cos, sin):\n    print('spam' * 1_000_000)\n"
                                     "    return _apply(x, cos, sin)\n")
    result = run_check("03", "apply_rope_matches_reference", namespace, max_output_chars=500)
    assert result["passed"]
    assert len(result["output"]) < 600 and result["output"].endswith("more characters not shown]")


@pytest.mark.parametrize("code, message", [
    ("del apply_rope", "apply_rope is not defined"),
    ("apply_rope = 3", "apply_rope is not a function but int 3"),
    ("def apply_rope(x, cos, sin):\n    raise IndexError('axis 9')", "apply_rope raised IndexError: axis 9"),
    ("def apply_rope(x, cos, sin):\n    return [x]", "returned list, expected a torch.Tensor"),
    ("def apply_rope(x, cos, sin):\n    return x[..., :2]", "has shape (2, 5, 3, 2), expected (2, 5, 3, 16)"),
    ("def apply_rope(x, cos, sin):\n    return x.half()", "has dtype torch.float16, expected torch.float32"),
    ("def apply_rope(x, cos, sin):\n    return x * float('nan')", "contains NaN or inf"),
    ("def apply_rope(x, cos, sin):\n    import sys; sys.exit(1)", "called exit()"),
    ("def apply_rope(x, cos, sin):\n    raise KeyboardInterrupt", "interrupted"),
])
def test_what_a_learner_writes_becomes_a_message_never_a_crash(code: str, message: str) -> None:
    result = run_check("03", "apply_rope_matches_reference", _rope_namespace(code=code))
    assert not result["passed"] and result["earned"] == 0
    assert message in result["message"]


def test_expectations_name_what_differs() -> None:
    with pytest.raises(CheckFailed, match=r"max abs error 1"):
        expect_tensor(torch.ones(3), torch.zeros(3), "f(x)")
    with pytest.raises(CheckFailed, match="returned float 3.0, expected int 3"):
        expect_equal(3.0, 3, "f(x)")
    expect_tensor(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), "f(x)",
                  where=torch.tensor([True, False]))  # unspecified entries are not compared


def test_bounded_text_keeps_the_start_and_counts_the_rest() -> None:
    sink = BoundedText(5)
    sink.write("abc")
    sink.write("defgh")
    assert sink.getvalue() == "abcde\n... [3 more characters not shown]"


# ---------------------------------------------------------------------------- the command line
def test_the_report_table_lists_checks_points_hints_and_total() -> None:
    report = GradeReport("exercises/03_rope.ipynb", "03", [
        CheckResult("a_check", 2, 2, True),
        CheckResult("b_check", 1, 0, False, "f(x) differs from the reference", "look at the sign"),
    ], [CellRun(4, "error", "NameError: name 'x' is not defined", "print(x)")])
    lines = report.table().splitlines()
    assert lines[0] == "exercises/03_rope.ipynb: chapter 03 (ch03_rope)"
    assert lines[3].split() == ["a_check", "2/2", "pass"]
    assert lines[4].split()[:3] == ["b_check", "0/1", "FAIL"]
    assert lines[4].endswith("f(x) differs from the reference; hint: look at the sign")
    assert lines[5].split() == ["total", "2/3"]
    assert lines[-1] == "  cell 5 (print(x)): NameError: name 'x' is not defined"
    data = report.to_json()
    assert (data["score"], data["max_score"], data["passed"]) == (2, 3, False)
    assert data["cell_errors"][0]["cell"] == 5


def test_grade_exits_2_when_there_is_nothing_to_grade(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["grade", str(tmp_path / "03_rope.ipynb")]) == 2
    assert "no notebook" in capsys.readouterr().err
    (tmp_path / "rope.ipynb").write_text("{}")
    assert cli.main(["grade", str(tmp_path / "rope.ipynb")]) == 2
    assert "cannot tell the chapter" in capsys.readouterr().err


def test_an_unreadable_notebook_scores_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "02_rmsnorm_swiglu.ipynb"
    path.write_text("{ this is not json")
    assert cli.main(["grade", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["score"] == 0 and data["max_score"] == chapter_checks("02").max_score
    assert all("could not read the notebook" in c["message"] for c in data["checks"])


# ---------------------------------------------------------------------------- the real grader (kernels)
def _grade_json(path: Path, capsys: pytest.CaptureFixture, *options: str) -> tuple[int, dict[str, Any]]:
    status = cli.main(["grade", str(path), "--json", *options])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_grader_gives_the_solution_full_marks(chapter: str, capsys: pytest.CaptureFixture) -> None:
    status, data = _grade_json(notebook(SOLUTIONS, chapter), capsys)
    assert [c["message"] for c in data["checks"] if not c["passed"]] == []
    assert status == 0 and data["score"] == data["max_score"] == chapter_checks(chapter).max_score
    assert data["cell_errors"] == []


# Chapters graded in a kernel with their solution only: their untouched exercise is graded in-process
# above, and one more kernel run each would add ~5 s to the slow set for little more.
SOLUTION_KERNEL_RUN_ONLY = {"01", "07", "08", "09", "10", "11", "12"}


@pytest.mark.slow
@pytest.mark.parametrize("chapter", sorted(set(CHAPTERS) - SOLUTION_KERNEL_RUN_ONLY))
def test_grader_gives_the_untouched_exercise_zero(chapter: str, capsys: pytest.CaptureFixture) -> None:
    status, data = _grade_json(notebook(EXERCISES, chapter), capsys)
    assert status == 1 and data["score"] == 0
    assert all("is not implemented yet" in c["message"] for c in data["checks"])
    # Only the self-checks fail: with NotImplementedError, or NameError for a value they never got.
    assert data["cell_errors"]
    assert {e["error"].split(":")[0] for e in data["cell_errors"]} <= {"NotImplementedError", "NameError"}


def _replace_cell(nb: nbformat.NotebookNode, defines: str, source: str) -> None:
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and f"def {defines}(" in c.source]
    cell.source = source


@pytest.mark.slow
def test_grader_catches_a_wrong_implementation(tmp_path: Path) -> None:
    fixture = FIXTURES / "ch03_adjacent_pairs.py"
    nb = nbformat.read(notebook(SOLUTIONS, "03"), as_version=4)
    _replace_cell(nb, "apply_rope", fixture.read_text())
    path = tmp_path / "03_rope.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path)
    failed = {c.name for c in report.checks if not c.passed}
    assert failed == load_fixture(fixture, {})
    assert report.score == report.max_score - sum(c.points for c in report.checks if c.name in failed)


HOSTILE_ROPE = [
    "def rope_inv_freq(head_dim, theta=10000.0):\n    while True:\n        pass",
    "def rope_cos_sin(inv_freq, position_ids):\n"  # deaf to the time limit and to interrupts
    "    while True:\n        try:\n            while True:\n                pass\n"
    "        except BaseException:\n            pass",
    "def apply_rope(x, cos, sin):\n    import torch\n    print('spam ' * 200_000)\n"
    "    x1, x2 = x.chunk(2, dim=-1)\n"
    "    return x * cos[:, :, None, :] + torch.cat((-x2, x1), dim=-1) * sin[:, :, None, :]",
    "def broken(:\n    pass",
    "while True:\n    pass",
    "print('x' * 10_000_000)",
    "raise RuntimeError('boom')",
]


@pytest.mark.slow
def test_grader_survives_loops_syntax_errors_and_floods(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in HOSTILE_ROPE]
    path = tmp_path / "03_rope.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, cell_timeout=5, check_timeout=2, max_output_chars=1000)
    results = {c.name: c for c in report.checks}
    assert results["rope_inv_freq_matches_reference"].message.startswith("timed out after 2 s")
    assert results["rope_cos_sin_matches_reference"].message.startswith("the kernel hung")
    apply_checks = [c for c in report.checks if c.name.startswith("apply_rope")]
    assert all(c.passed for c in apply_checks)  # printing is not wrong, and its flood is cut
    assert all(len(c.output) < 1100 for c in apply_checks)
    assert report.score == sum(c.points for c in apply_checks) < report.max_score
    errors = {run.index: (run.status, run.error) for run in report.cell_errors}
    assert errors[3][0] == "error" and errors[3][1].startswith("SyntaxError")
    assert errors[4] == ("timeout", "")
    assert errors[6] == ("error", "RuntimeError: boom")


HOSTILE_ATTENTION = [
    "import os",
    "def causal_mask(t, s):\n    import torch\n    return torch.ones(t, s, dtype=torch.long).tril(diagonal=s - t)",
    "def kv_cache_update(cache_k, cache_v, k, v, start):\n"  # kills its kernel the first time only
    "    if not os.path.exists('crashed-once'):\n        open('crashed-once', 'w').close()\n        os._exit(3)\n"
    "    end = start + k.shape[2]\n    cache_k[:, :, start:end] = k\n    cache_v[:, :, start:end] = v\n"
    "    return cache_k[:, :, :end], cache_v[:, :, :end]",
    "if not os.path.exists('cell-crashed-once'):\n    open('cell-crashed-once', 'w').close()\n    os._exit(4)",
]


@pytest.mark.slow
def test_grader_survives_kernel_deaths_and_grades_the_rest(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in HOSTILE_ATTENTION]
    path = tmp_path / "04_attention_gqa_kvcache.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, cell_timeout=30, check_timeout=5)
    results = {c.name: c for c in report.checks}
    for name in ("causal_mask_square", "causal_mask_for_decoding"):  # wrong dtype
        assert "has dtype torch.int64, expected torch.bool" in results[name].message
    for name in (n for n in results if n.startswith("gqa_attention")):  # never written
        assert results[name].message.startswith("gqa_attention is not defined")
    assert results["kv_cache_update_writes_in_place"].message.startswith("the kernel died")
    assert results["kv_cache_update_returns_filled_prefix"].passed  # graded in the next kernel
    assert results["kv_cache_decoding_matches_full_attention"].passed
    assert [(run.index, run.status) for run in report.cell_errors] == [(3, "died")]
