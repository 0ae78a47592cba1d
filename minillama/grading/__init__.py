"""Graded exercises: solution notebooks, the exercises made from them, and the grader.

The pieces
==========

* ``solutions/NN_<topic>.ipynb``: learner-facing notebooks whose graded functions keep their
  bodies between nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers.
* :mod:`minillama.grading.exercises` makes ``exercises/`` from them (``make exercises``): every
  marked region becomes ``raise NotImplementedError()`` and all outputs are cleared.
* :mod:`minillama.grading.grade` is ``minillama grade exercises/03_rope.ipynb`` (also
  ``python -m minillama.grading ...``): it runs the notebook, runs the chapter's checks, prints a
  table (check, points, pass/fail, hint) and the total, or JSON with ``--json``; exit status 0
  when every check passes, 1 otherwise.

Design: the checks run inside the learner's kernel
==================================================

The grader executes the learner's notebook with nbclient in a fresh Jupyter kernel, exactly as
the learner ran it (cell by cell, errors allowed, a timeout per cell), and keeps that kernel. Each
check is then sent to it as one more cell, ``report(chapter, check, ...)``
(:mod:`minillama.grading.runner`), which looks the learner's functions up in the kernel's
namespace, runs the check on them and displays its result as JSON under a MIME type of its own.
The grader reads that output back (:mod:`minillama.grading.session`).

Why this way: the learner's functions are only defined in their notebook's namespace, with
whatever helpers and imports the notebook made, so the checks run where those are. And the
learner's code never runs in the grader's process: an infinite loop is stopped by a timer in the
kernel (``SIGALRM``, per check) or by interrupting the kernel (per cell); a kernel that ignores
interrupts, or dies (``os._exit``, a segfault, out of memory), is replaced by a fresh one that
replays the notebook without the offending cell, and only the checks it was running lose their
points. Text output is capped on both sides, so a huge print costs nothing but its truncation.
The grader trusts the learner not to tamper with it on purpose: it is a teaching aid, not a proctor.

Checks, and adding a chapter
============================

A chapter's checks are one module, ``minillama/grading/checks/chNN_<topic>.py``, holding
``CHECKS = Checks()`` and functions registered with ``@CHECKS.add(points=..., hint=...)``; each
takes a :class:`~minillama.grading.check.Learner`, gets the learner's functions with
``learner.function("name")`` and fails by raising
:class:`~minillama.grading.check.CheckFailed` (the ``expect_*`` helpers do). Checks compare with
the minillama reference on seeded random inputs and on edge cases, one property each, so that one
mistake costs the points of the checks about it and no others. To add chapter NN:

1. write ``solutions/NN_<topic>.ipynb`` (markers around each graded body, a self-check per function)
   and execute it, so that its outputs are committed (nbval compares them);
2. write ``minillama/grading/checks/chNN_<topic>.py``;
3. add ``"NN": "chNN_<topic>"`` to :data:`minillama.grading.checks.CHAPTERS`;
4. ``make exercises``; add two or more wrong implementations, ``tests/grading_fixtures/chNN_<mistake>.py``
   (the wrong function and ``EXPECT_FAIL``, the checks it must fail). ``tests/test_grading.py``
   picks up every registered chapter and every fixture by itself.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``minillama grade ...``; see :mod:`minillama.grading.grade`."""
    from .grade import main as grade_main  # lazily: the kernel imports this package for the checks

    return grade_main(argv)
