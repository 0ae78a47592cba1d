"""The benchmarks' one timing harness (minillama.bench.harness): the order of timed calls, the
medians, and the machine record."""

from __future__ import annotations

import math
import time

import pytest
import torch

from minillama.bench import harness

CPU = torch.device("cpu")


def test_interleaved_times_alternates_and_skips_warmup():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "c": lambda: calls.append("c")}
    times = harness.interleaved_times(fns, warmup=1, repeats=3, device=CPU)
    assert calls == ["a", "b", "c"] * 4, "turns a b c a b c, one untimed round first"
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_time_call_times_the_call_in_seconds():
    assert 0.02 <= harness.time_call(lambda: time.sleep(0.02), CPU) < 10


def test_medians_ignore_one_slow_call():
    times = [0.004, 0.001, 0.002, 0.003, 1.0]
    assert harness.median_ms(times) == pytest.approx(3.0)
    summary = harness.summarize(times, tokens=30)
    assert summary["median_s"] == 0.003 and summary["min_s"] == 0.001 and summary["times_s"] == times
    assert summary["tokens_per_s"] == pytest.approx(10_000)


@pytest.mark.parametrize("start, end, busy",
                         [(0.2, 1.9, False), (None, 2.4, False), (3.1, 1.0, True), (0.5, 6.0, True)])
def test_busy_warning_flags_a_load_above_the_cpu_count(start, end, busy):
    warning = harness.busy_warning("cpu", 2, (start, end))
    assert (warning is not None) == busy
    if busy:
        assert f"{max(start, end):.1f}" in warning
    assert harness.busy_warning("cuda", 2, (start, end)) is None, "a GPU run: the CPUs' load is not its figure"
    assert harness.busy_warning("cpu", 2, (None, None)) is None


def test_machine_record():
    machine = harness.machine_info(CPU, "transformers", "no_such_package_here")
    assert machine["device"] == "cpu" and machine["device_name"] == machine["cpu_model"] == harness.cpu_model()
    assert machine["cpu_count"] == harness.available_cpus() >= 1
    assert machine["torch_threads"] == torch.get_num_threads()
    assert machine["torch"] == torch.__version__ and machine["python"].count(".") == 2
    assert isinstance(machine["transformers"], str) and machine["no_such_package_here"] is None
    assert machine["load_average_start"] is None or math.isfinite(machine["load_average_start"])
    assert set(harness.versions("triton")) == {"python", "torch", "triton"}
    assert harness.device_slug(CPU) == "cpu"
