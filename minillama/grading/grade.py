"""``minillama grade NOTEBOOK``: run a chapter's checks on a learner's notebook, print the score.

The notebook runs in a fresh kernel (:class:`~minillama.grading.session.NotebookSession`), then
each check of its chapter runs in that kernel (:func:`~minillama.grading.runner.report`) and
sends its result back. The report is a table (check, points, result, hint) and a total, or JSON
with ``--json``. Exit status: 0 when every check passes, 1 otherwise, 2 when the notebook cannot
be graded at all (no such file, no graded chapter, no kernel).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient.util import run_sync
from tqdm.auto import tqdm

from .checks import CHAPTERS, chapter_checks, chapter_of
from .runner import RESULT_MIME
from .session import CellRun, KernelLost, NotebookSession

HINT_WIDTH = 160  # characters of a hint shown in the table; --json has them whole


@dataclass
class CheckResult:
    name: str
    points: int
    earned: int = 0
    passed: bool = False
    message: str = ""
    hint: str = ""
    output: str = ""

    def advice(self) -> str:
        """One line for the table: what went wrong, and where to look."""
        if self.passed:
            return ""
        return f"{self.message}; hint: {self.hint}" if self.hint else self.message


@dataclass
class GradeReport:
    notebook: str
    chapter: str
    checks: list[CheckResult]
    cell_errors: list[CellRun] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(c.earned for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "chapter": self.chapter, "module": CHAPTERS[self.chapter],
                "score": self.score, "max_score": self.max_score, "passed": self.passed,
                "checks": [asdict(c) for c in self.checks],
                "cell_errors": [{"cell": r.index + 1, "status": r.status, "error": r.describe(),
                                 "first_line": r.first_line} for r in self.cell_errors]}

    def table(self) -> str:
        width = max(len("total"), *(len(c.name) for c in self.checks))
        row = f"{{:<{width}}}  {{:>6}}  {{:<6}}  {{}}"
        lines = [f"{self.notebook}: chapter {self.chapter} ({CHAPTERS[self.chapter]})", "",
                 row.format("check", "points", "result", "hint")]
        for c in self.checks:
            advice = c.advice()
            if len(advice) > HINT_WIDTH:
                advice = advice[: HINT_WIDTH - 3] + "..."
            lines.append(row.format(c.name, f"{c.earned}/{c.points}", "pass" if c.passed else "FAIL", advice))
        lines.append(row.format("total", f"{self.score}/{self.max_score}", "", ""))
        if self.cell_errors:
            lines += ["", "cells that did not run cleanly (counting every cell from 1, markdown included):"]
            lines += [f"  cell {r.index + 1} ({r.first_line}): {r.describe()}" for r in self.cell_errors]
        return "\n".join(lines)


def _failed_all(chapter: str, message: str) -> list[CheckResult]:
    return [CheckResult(c.name, c.points, message=message) for c in chapter_checks(chapter)]


def _parse_result(check_name: str, points: int, outputs: list) -> CheckResult:
    for out in outputs:
        data = out.get("data", {}) if out.output_type == "display_data" else {}
        if RESULT_MIME in data:
            fields = {k: data[RESULT_MIME].get(k) for k in ("earned", "passed", "message", "hint", "output")}
            return CheckResult(check_name, points, **{k: v for k, v in fields.items() if v is not None})
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    reason = errors[0] if errors else "no result came back"
    return CheckResult(check_name, points, message=f"the grader could not run this check ({reason})")


async def _grade_in_kernel(nb: nbformat.NotebookNode, cwd: Path, chapter: str, kernel_name: str,
                           cell_timeout: float, check_timeout: float, max_output_chars: int) -> GradeReport:
    results: list[CheckResult] = []
    setup = (f"__import__('minillama.grading.runner'); "
             f"__import__('minillama.grading.checks.{CHAPTERS[chapter]}'); None")
    session = NotebookSession(nb, cwd, kernel_name=kernel_name, cell_timeout=cell_timeout, setup_code=setup)
    # The checks import torch here too: do it while the kernel starts and runs the notebook.
    checks_loading = asyncio.ensure_future(asyncio.to_thread(chapter_checks, chapter))
    try:
        try:
            await session.start()
        except KernelLost as lost:
            return GradeReport("", chapter, _failed_all(chapter, f"not run: the notebook's kernel {lost.reason}"),
                               session.errors())
        checks = list(await checks_loading)
        for check in tqdm(checks, desc="checks", unit="check", disable=None, leave=False):
            code = (f"__import__('minillama.grading.runner', fromlist=['report']).report("
                    f"{chapter!r}, {check.name!r}, {check_timeout!r}, {max_output_chars!r})")
            try:
                # The check stops itself at check_timeout; the session interrupts a little later.
                outputs = await session.run_code(code, timeout=check_timeout + 3)
            except KernelLost as lost:
                message = {"died": "the kernel died while this check ran (os._exit? a crash? out of memory?); "
                                   "the grader started a new one",
                           "hung": "the kernel hung while this check ran, deaf to the time limit and to "
                                   "interrupts (a loop inside try/except?); the grader started a new one"
                           }.get(lost.reason, f"not run: the kernel {lost.reason}")
                results.append(CheckResult(check.name, check.points, message=message))
                continue
            results.append(_parse_result(check.name, check.points, outputs))
    finally:
        await session.close()
        await checks_loading
    return GradeReport("", chapter, results, session.errors())


def grade_notebook(path: str | Path, chapter: str | None = None, kernel_name: str = "python3",
                   cell_timeout: float = 30.0, check_timeout: float = 10.0,
                   max_output_chars: int = 2000) -> GradeReport:
    """Execute the notebook at ``path`` in a fresh kernel and run its chapter's checks there.

    ``chapter`` defaults to the two digits the file name starts with. Raises ``ValueError`` when
    the chapter is unknown and ``FileNotFoundError`` when there is no file; a notebook that
    cannot be read or run scores 0 instead."""
    path = Path(path)
    chapter = chapter_of(path) if chapter is None else chapter
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; graded chapters: {sorted(CHAPTERS)}")
    if cell_timeout <= 0 or check_timeout <= 0:
        raise ValueError(f"cell_timeout and check_timeout must be > 0 seconds, got {cell_timeout}, {check_timeout}")
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {str(path)!r}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable file scores 0 with the reason
        return GradeReport(str(path), chapter, _failed_all(chapter, f"could not read the notebook: {exc}"))
    # run_sync, not asyncio.run: it also works when called from a notebook, inside a running loop.
    report = run_sync(_grade_in_kernel)(nb, path.parent.resolve(), chapter, kernel_name, cell_timeout,
                                        check_timeout, max_output_chars)
    report.notebook = str(path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minillama grade", description="Grade an exercise notebook: run it, then run its chapter's checks.")
    parser.add_argument("notebook", type=Path, help="e.g. exercises/03_rope.ipynb")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--chapter", choices=sorted(CHAPTERS), help="chapter (default: from the file name)")
    parser.add_argument("--cell-timeout", type=float, default=30.0, help="seconds per notebook cell (default 30)")
    parser.add_argument("--check-timeout", type=float, default=10.0, help="seconds per check (default 10)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = parser.parse_args(argv)
    try:
        report = grade_notebook(args.notebook, args.chapter, args.kernel, args.cell_timeout, args.check_timeout)
    except (ValueError, FileNotFoundError) as exc:
        print(f"minillama grade: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - no kernel: an installation problem, not the learner's
        print(f"minillama grade: could not run the notebook in kernel {args.kernel!r}: {type(exc).__name__}: "
              f"{exc}\n(is the course environment installed? `make install` registers the kernel)",
              file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    return 0 if report.passed else 1
