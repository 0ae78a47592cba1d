"""The one timing harness and machine record of every benchmark in :mod:`minillama.bench`.

Timing: :func:`interleaved_times` runs the functions under test in turns (a b c a b c ...), each
call timed alone after a synchronize, so that a burst of load from other processes on a shared
machine slows all of them alike and their ratios stay fair; :func:`median_ms` and
:func:`summarize` reduce the times to the median, the figure the reports show (one slow call
moves a mean, not a median).

Machine record: what a reader needs to trust or discount the figures: the device, the CPU and
how many of its cores this process may use, the torch threads, the load average before and after
(:func:`busy_warning` says when other processes competed for the CPUs), and the versions of
python, torch and the libraries compared against.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import platform
import re
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import torch

# ---------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA runs asynchronously, so a timer read before the
    work is done would time the launch, not the work. A no-op on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, from an idle device to its work done.

    On a GPU, CUDA events bracket the call: they read the GPU's own clock, without the host's
    round trip of a synchronize (microseconds that a short kernel would feel). Elsewhere the
    wall clock."""
    synchronize(device)
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start_event.record()
    fn()
    end_event.record()
    end_event.synchronize()
    return start_event.elapsed_time(end_event) / 1000


def interleaved_times(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int,
                      device: torch.device) -> dict[str, list[float]]:
    """Seconds taken by each call of each function, after ``warmup`` untimed rounds.

    The functions take turns (a b c a b c ...) rather than running one after the other, so that
    a burst of load from other processes on a shared machine slows all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_call(fn, device))
    return times


def median_ms(times: list[float]) -> float:
    """The median of times in seconds, in milliseconds: the figure a table reports."""
    return 1000 * statistics.median(times)


def summarize(times: list[float], tokens: int) -> dict[str, Any]:
    """Median (the reported figure) and minimum of timed calls that each process ``tokens``."""
    median = statistics.median(times)
    return dict(times_s=times, median_s=median, min_s=min(times), tokens_per_s=tokens / median)


# ---------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), which ``platform.processor()`` leaves empty on Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity): fewer than the machine's in a container."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average: above the core count, other processes competed for the CPU."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy_warning(device_type: str, cpu_count: int, loads: Iterable[float | None]) -> str | None:
    """A warning when other processes competed for the CPUs of a CPU run: a load average above
    the CPU count (this run's own threads count for at most the CPU count)."""
    known = [x for x in loads if x is not None]
    if device_type != "cpu" or not known or max(known) <= cpu_count + 0.5:
        return None
    return (f"1-minute load average reached {max(known):.1f} on {cpu_count} CPUs: other processes "
            "competed for them, so the timings are noisy (compare the ratios, which come from interleaved calls)")


def versions(*packages: str) -> dict[str, str | None]:
    """python's and torch's versions and each named package's (``None`` where it is not installed):
    figures move with the libraries, so the report says which ran."""
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in packages:
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = None
    return out


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def device_slug(device: torch.device) -> str:
    """``cpu``, or the GPU's model in lower case (``h100``): the suffix of a result's file name,
    so that results of different GPUs sit side by side."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    found = re.search(r"\b([A-Z]+\d+[A-Za-z]*)\b", name)
    return (found.group(1) if found else re.sub(r"[^A-Za-z0-9]+", "_", name)).lower()


def utc_now() -> str:
    """The date and time of a run, in UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine_info(device: torch.device, *packages: str) -> dict[str, Any]:
    """The machine record at the start of a run (add ``load_average_end`` at its end), with the
    versions of python, torch and ``packages``."""
    return dict(device=device.type, device_name=device_name(device), cpu_model=cpu_model(),
                cpu_count=available_cpus(), torch_threads=torch.get_num_threads(), **versions(*packages),
                platform=platform.platform(), date=utc_now(), load_average_start=load_average())
