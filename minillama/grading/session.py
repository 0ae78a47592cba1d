"""The learner's notebook, executed in a Jupyter kernel that the grader keeps for its checks.

:class:`NotebookSession` runs every code cell with nbclient (errors allowed, a timeout per cell),
then runs more code in the same kernel on request (:meth:`NotebookSession.run_code`), which is
how the checks reach the learner's functions. What can go wrong in a learner's kernel, and what
the session does about it:

* a cell or a check raises: recorded, the run goes on (``allow_errors``);
* it runs past its timeout: the kernel is interrupted (``KeyboardInterrupt``), then probed;
* it ignores the interrupt, or the kernel dies (``os._exit``, a segfault, out of memory): the
  kernel is replaced by a fresh one that replays the notebook *without* the cells that hung or
  killed it; :meth:`run_code` raises :class:`KernelLost` so that the caller can fail that check;
* it prints without end: only the first ``max_text_chars`` of each cell's text are kept, and
  only the outputs the grader reads (errors, text, check results), so memory stays bounded.

Every wait has a deadline, so a session always ends.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from .check import one_line
from .runner import RESULT_MIME

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # nbclient logs every timeout as an error; the grader reports them

TIMEOUT_ENAME = "CellTimeout"
PROBE_TIMEOUT = 3.0  # seconds a responsive kernel needs to run `pass` after an interrupt
IOPUB_TIMEOUT = 4  # seconds nbclient waits for a cell's last output after its reply
LOST = ("died", "hung")


class KernelLost(Exception):
    """The kernel died or stopped answering while running code; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the kernel {reason}")
        self.reason = reason


@dataclass
class CellRun:
    """How one code cell of the learner's notebook ran: ``status`` is ``ok``, ``error`` (with
    ``error`` = ``"ename: evalue"``), ``timeout`` (interrupted), ``died`` or ``hung``."""

    index: int
    status: str
    error: str = ""
    first_line: str = ""

    def describe(self) -> str:
        return {"error": self.error, "timeout": "timed out (interrupted)",
                "died": "killed the kernel", "hung": "hung the kernel"}.get(self.status, "ok")


class _GradingClient(NotebookClient):
    """nbclient, keeping only the outputs the grader reads, with a cap on text."""

    max_text_chars = 4000

    def output(self, outs: list, msg: dict[str, Any], display_id: str | None, cell_index: int) -> Any:
        kind, content = msg["msg_type"], msg["content"]
        out = None
        if kind == "error":
            out = nbformat.v4.new_output("error", ename=one_line(content.get("ename", "")),
                                         evalue=one_line(content.get("evalue", "")), traceback=[])
        elif kind in ("display_data", "execute_result") and RESULT_MIME in content.get("data", {}):
            out = nbformat.v4.new_output("display_data", data={RESULT_MIME: content["data"][RESULT_MIME]})
        elif kind == "stream":
            used = sum(len(o.text) for o in outs if o.output_type == "stream")
            room = self.max_text_chars - used
            if room > 0:
                text = content.get("text", "")
                if len(text) > room:
                    text = text[:room] + "\n... [output truncated]\n"
                out = nbformat.v4.new_output("stream", name=content.get("name", "stdout"), text=text)
        if out is not None:
            outs.append(out)
        return out


def kernel_env() -> dict[str, str]:
    """The kernel's environment: ours, with a fixed hash seed so that runs repeat."""
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    return env


class NotebookSession:
    """A kernel that has run the learner's notebook; use as ``async with NotebookSession(...)``."""

    def __init__(self, nb: nbformat.NotebookNode, cwd: str | Path, kernel_name: str = "python3",
                 cell_timeout: float = 30.0, setup_code: str = "", setup_timeout: float = 120.0,
                 startup_timeout: int = 60, max_restarts: int = 3) -> None:
        self.nb = copy.deepcopy(nb)
        self.n_cells = len(self.nb.cells)
        self.nb.cells.append(nbformat.v4.new_code_cell(""))  # the slot where run_code's cells run
        self.cwd, self.kernel_name = str(cwd), kernel_name
        self.cell_timeout, self.startup_timeout = cell_timeout, startup_timeout
        # Run after the notebook in every kernel (e.g. importing the checks, so that their import
        # time does not count against the first check's time limit).
        self.setup_code, self.setup_timeout = setup_code, setup_timeout
        self.max_restarts, self.restarts = max_restarts, 0
        self.cell_runs: dict[int, CellRun] = {}
        self._client: _GradingClient | None = None
        self._timeout = cell_timeout
        self._reply: dict[str, Any] = {}

    # ---------------------------------------------------------------- kernel lifetime
    async def __aenter__(self) -> "NotebookSession":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        """Start a kernel and run the notebook; replace the kernel (and skip the cell) whenever a
        cell kills or hangs it."""
        while True:
            await self._new_kernel()
            lost = await self._run_cells()
            if lost is None and self.setup_code:
                setup = nbformat.v4.new_code_cell(self.setup_code)
                run = await self._execute(self.n_cells, self.setup_timeout, setup)
                lost = run if run.status in LOST else None
            if lost is None:
                return
            await self._spend_restart()

    async def restart(self) -> None:
        """A fresh kernel with the notebook replayed (cells that hung or died before are skipped)."""
        await self._spend_restart()
        await self.start()

    async def close(self) -> None:
        if self._client is not None and self._client.km is not None:
            try:
                await self._client._async_cleanup_kernel()
            except Exception:  # noqa: BLE001 - the kernel is being thrown away anyway
                log.debug("kernel cleanup failed", exc_info=True)
        self._client = None

    async def _spend_restart(self) -> None:
        await self.close()
        if self.restarts >= self.max_restarts:
            raise KernelLost(f"was lost {self.restarts + 1} times, so the grader gave up on it")
        self.restarts += 1

    async def _new_kernel(self) -> None:
        self._client = _GradingClient(
            self.nb, kernel_name=self.kernel_name, allow_errors=True, interrupt_on_timeout=True,
            error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": "timed out", "traceback": []},
            timeout_func=lambda cell: self._timeout, record_timing=False, shutdown_kernel="immediate",
            iopub_timeout=IOPUB_TIMEOUT, startup_timeout=self.startup_timeout,
            on_cell_executed=self._on_cell_executed, log=log)
        self._client.km = self._client.create_kernel_manager()
        await self._client.async_start_new_kernel(cwd=self.cwd, env=kernel_env(), stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL)
        await self._client.async_start_new_kernel_client()

    def _on_cell_executed(self, cell: Any, cell_index: int, execute_reply: dict[str, Any] | None) -> None:
        self._reply = (execute_reply or {}).get("content", {})

    # ---------------------------------------------------------------- execution
    async def _run_cells(self) -> CellRun | None:
        """Run the notebook's code cells; returns the run that lost the kernel, if one did."""
        for index, cell in enumerate(self.nb.cells[: self.n_cells]):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if self.cell_runs.get(index) and self.cell_runs[index].status in (*LOST, "timeout"):
                continue  # it hung or killed a kernel before: do not replay it
            run = await self._execute(index, self.cell_timeout)
            run.first_line = one_line(cell.source, 60)
            self.cell_runs[index] = run
            if run.status in LOST:
                return run
        return None

    async def _execute(self, index: int, timeout: float, cell: nbformat.NotebookNode | None = None) -> CellRun:
        """Run the notebook's cell ``index``, or ``cell`` in the scratch slot ``index = n_cells``
        (its outputs land in ``cell.outputs``)."""
        assert self._client is not None
        cell = self.nb.cells[index] if cell is None else cell
        self._timeout, self._reply = timeout, {}
        # nbclient interrupts at `timeout` and answers for the kernel; this outer deadline is for
        # the case where even that does not come back.
        deadline = timeout + PROBE_TIMEOUT + IOPUB_TIMEOUT + 5
        try:
            await asyncio.wait_for(self._client.async_execute_cell(cell, index), deadline)
        except DeadKernelError:
            return CellRun(index, "died")
        except asyncio.TimeoutError:
            return CellRun(index, "hung")
        if self._reply.get("ename") == TIMEOUT_ENAME:
            return CellRun(index, "timeout" if await self._responsive() else "hung")
        if self._reply.get("status") == "error":
            ename, evalue = self._reply.get("ename", "Error"), self._reply.get("evalue", "")
            return CellRun(index, "error", one_line(f"{ename}: {evalue}" if evalue else ename))
        return CellRun(index, "ok")

    async def _responsive(self) -> bool:
        """After an interrupt: does the kernel run a trivial cell again?"""
        probe = nbformat.v4.new_code_cell("pass")
        self._timeout, self._reply = PROBE_TIMEOUT, {}
        try:
            await asyncio.wait_for(self._client.async_execute_cell(probe, self.n_cells),
                                   PROBE_TIMEOUT + IOPUB_TIMEOUT + 5)
        except (DeadKernelError, asyncio.TimeoutError):
            return False
        return self._reply.get("status") == "ok"

    async def run_code(self, source: str, timeout: float) -> list[nbformat.NotebookNode]:
        """Run ``source`` in the learner's kernel and return its outputs. Raises
        :class:`KernelLost` when the kernel died or hung (the session is then restarted)."""
        if self._client is None:
            raise KernelLost("was lost too often, so the grader gave up on it")
        cell = nbformat.v4.new_code_cell(source)
        run = await self._execute(self.n_cells, timeout, cell)
        if run.status in LOST:
            await self.restart()  # raises KernelLost itself when out of restarts
            raise KernelLost(run.status)
        return list(cell.outputs)

    def errors(self) -> list[CellRun]:
        """The learner's cells that did not run cleanly, in notebook order."""
        return [run for _, run in sorted(self.cell_runs.items()) if run.status != "ok"]
