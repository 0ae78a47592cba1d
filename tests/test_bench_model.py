"""The model throughput benchmark (benchmarks/bench_model.py): a --quick run end to end, and the
pieces of its report that must hold whatever the machine's speed."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model.py"


def load_bench_module():
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_a_complete_report(tmp_path: Path):
    # One test, not three on a shared fixture: under pytest-xdist each worker would rerun it.
    report, stdout = quick_run(tmp_path)
    check_machine_and_outputs(report, tmp_path, stdout)
    check_training(report)
    check_decode_and_context(report)


def quick_run(out: Path) -> tuple[dict, str]:
    # One thread: tiny shapes gain nothing from two, and a second thread spinning on a core that
    # other processes share makes the run several times slower.
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out-dir", str(out),
                           "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "model_cpu.json").read_text()), proc.stdout


def positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def check_machine_and_outputs(report: dict, out: Path, stdout: str) -> None:
    machine = report["machine"]
    for key in ("device_name", "cpu_model", "python", "torch", "transformers", "date", "platform"):
        assert isinstance(machine[key], str) and machine[key], key
    assert machine["device"] == "cpu"
    assert machine["torch_threads"] == 1
    assert machine["torch"] == torch.__version__
    assert machine["busy_warning"] is None or "load average" in machine["busy_warning"]
    assert report["settings"]["quick"] is True
    assert list(report["presets"]) == ["tiny"]
    assert report["presets"]["tiny"]["config"]["dim"] == 256
    assert (out / "model_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| tiny | training tokens/s" in stdout and "| tiny | cached decode tokens/s (b=8" in stdout


def check_training(report: dict) -> None:
    train = report["presets"]["tiny"]["training"]
    assert set(train["results"]) == {"minillama-eager", "minillama-sdpa", "transformers-sdpa"}
    first_losses = [r["first_loss"] for r in train["results"].values()]
    # The three start from the same weights and batch: the same loss up to float32 round-off.
    assert max(first_losses) - min(first_losses) < 1e-4
    assert abs(first_losses[0] - math.log(2048)) < 0.5  # a fresh model is close to uniform
    for r in train["results"].values():
        assert len(r["times_s"]) == report["settings"]["steps"]
        assert all(positive(t) for t in r["times_s"])
        assert positive(r["tokens_per_s"])
        assert r["tokens_per_s"] == pytest.approx(train["tokens_per_step"] / r["median_s"])
        assert r["min_s"] <= r["median_s"]
    for name, ratio in train["ratios"].items():
        ours = name.split(" / ")[0]
        assert ratio == pytest.approx(train["results"][ours]["tokens_per_s"]
                                      / train["results"]["transformers-sdpa"]["tokens_per_s"])


def check_decode_and_context(report: dict) -> None:
    tiny = report["presets"]["tiny"]
    assert set(tiny["decode"]) == {"batch_1", "batch_8"}
    for dec in tiny["decode"].values():
        assert dec["tokens_match"] is True
        r = dec["results"]
        assert positive(r["minillama"]["tokens_per_s"]) and positive(r["transformers"]["tokens_per_s"])
        assert dec["ratio"] == pytest.approx(r["minillama"]["tokens_per_s"] / r["transformers"]["tokens_per_s"])
    ctx = tiny["context"]
    lengths = ctx["context_lengths"]
    assert lengths == sorted(set(lengths)) and lengths[0] == 16
    for series in ctx["ms_per_token"].values():
        assert len(series) == len(lengths) and all(positive(ms) for ms in series)
    targets = report["targets"]
    assert set(targets) == {"tiny: training minillama-sdpa / transformers-sdpa >= 1.0",
                            "tiny: cached decode batch_1 minillama / transformers >= 1.5",
                            "tiny: cached decode batch_8 minillama / transformers >= 1.5"}
    assert targets["tiny: cached decode batch_8 minillama / transformers >= 1.5"]["met"] == (
        tiny["decode"]["batch_8"]["ratio"] >= 1.5)


@pytest.mark.parametrize("max_seq_len, steps, max_context, expected", [
    (256, 5, None, [16, 32, 64, 128, 250]),
    (256, 2, 64, [16, 32, 64]),
    (1024, 5, 100, [16, 32, 64, 100]),
    (40, 3, None, [16, 32, 36]),
])
def test_context_lengths_leave_room_for_the_timed_steps(max_seq_len, steps, max_context, expected):
    bench = load_bench_module()
    assert bench.context_lengths(max_seq_len, steps, max_context) == expected


def test_interleaved_times_alternates_and_skips_warmup():
    bench = load_bench_module()
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = bench.interleaved_times(fns, warmup=1, repeats=3, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 4
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


@pytest.mark.parametrize("start, end, busy", [(0.2, 1.9, False), (None, 2.4, False), (3.1, 1.0, True), (0.5, 6.0, True)])
def test_busy_warning_flags_a_load_above_the_cpu_count(start, end, busy):
    bench = load_bench_module()
    machine = dict(device="cpu", cpu_count=2, load_average_start=start, load_average_end=end)
    warning = bench.busy_warning(machine)
    assert (warning is not None) == busy
    if busy:
        assert f"{max(start, end):.1f}" in warning
