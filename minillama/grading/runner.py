"""Run one check where the learner's functions live, and hand back its result as JSON.

This is the part of the grader that runs *inside the learner's kernel*: the grader sends
``report(chapter, check, ...)`` as a cell, and the result comes back as a ``display_data``
output of type :data:`RESULT_MIME`, so that nothing the learner prints can be mistaken for it.
:func:`run_check` is the same thing on any namespace dict, which is how the tests run the checks
in-process on the solutions and on deliberately wrong implementations.

Inside a check, the learner's prints are captured (and cut to ``max_output_chars``), and a timer
(``SIGALRM``) raises :class:`~minillama.grading.check.CheckTimeout` in their code after
``timeout_s``. Code that ignores it is left to the grader, which interrupts or restarts the kernel.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
from typing import Any, Iterator

from .check import CheckFailed, CheckTimeout, Learner, one_line
from .checks import chapter_checks

RESULT_MIME = "application/vnd.minillama.check-result+json"


class BoundedText(io.TextIOBase):
    """A text sink that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.kept, self.dropped = limit, [], 0
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = max(0, self.limit - self._size)
        self.kept.append(text[:room])
        self._size += min(room, len(text))
        self.dropped += max(0, len(text) - room)
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self.kept)
        return text + (f"\n... [{self.dropped} more characters not shown]" if self.dropped else "")


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in the running code after ``seconds`` (main thread only:
    elsewhere, and for ``None``, no limit)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_check(chapter: str, name: str, namespace: dict[str, Any], timeout_s: float | None = 10.0,
              max_output_chars: int = 2000) -> dict[str, Any]:
    """Run check ``name`` of ``chapter`` on the functions in ``namespace``.

    Returns ``{name, points, earned, passed, message, hint, output}``: ``message`` says what went
    wrong, ``hint`` what to look at (only for wrong answers), ``output`` what the learner's code
    printed. Never raises, whatever the learner's code does."""
    result: dict[str, Any] = {"name": name, "points": 0, "earned": 0, "passed": False, "message": "",
                              "hint": "", "output": ""}
    output = BoundedText(max_output_chars)
    try:
        check = chapter_checks(chapter).get(name)
        result["points"] = check.points
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), time_limit(timeout_s):
            check.run(Learner(namespace))
        result.update(passed=True, earned=check.points)
    except CheckFailed as failure:
        result["message"] = failure.message
        if failure.wrong_answer:
            result["hint"] = check.hint
    except CheckTimeout:
        result["message"] = f"timed out after {timeout_s:g} s: is there an infinite loop?"
    except KeyboardInterrupt:
        result["message"] = "interrupted: it ran past the grader's time limit"
    except SystemExit:
        result["message"] = "the code called exit(); a function must return its result instead"
    except Exception as exc:  # noqa: BLE001 - a result the check could not even inspect
        result["message"] = f"could not check the result: {type(exc).__name__}: {one_line(exc)}"
    result["output"] = output.getvalue()
    return result


def report(chapter: str, name: str, timeout_s: float | None = 10.0, max_output_chars: int = 2000) -> None:
    """Run a check in the learner's kernel and display its result as :data:`RESULT_MIME`."""
    from IPython import get_ipython
    from IPython.display import display

    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else {}
    display({RESULT_MIME: run_check(chapter, name, namespace, timeout_s, max_output_chars)}, raw=True)
