"""The model throughput benchmark (``minillama bench model``): a --quick run end to end, and the
pieces of its report that must hold whatever the machine's speed. The timing harness has its own
tests (test_bench_harness.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillama.bench import model as bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
def test_quick_run_writes_a_complete_report(tmp_path: Path):
    # One test, not three on a shared fixture: under pytest-xdist each worker would rerun it.
    report, stdout = quick_run(tmp_path)
    check_machine_and_outputs(report, tmp_path, stdout)
    check_training(report)
    check_decode_and_context(report)


def quick_run(out: Path) -> tuple[dict, str]:
    # One thread: tiny shapes gain nothing from two, and a second thread spinning on a core that
    # other processes share makes the run several times slower.
    proc = subprocess.run([sys.executable, "-m", "minillama.bench", "model", "--quick", "--device", "cpu",
                           "--out-dir", str(out), "--threads", "1"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
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
    assert "| tiny | training tokens/s, fp32" in stdout and "| tiny | greedy decode tokens/s (b=8" in stdout
    assert "| tiny | sampled tokens/s (8 prompts x K=4" in stdout


def check_training(report: dict) -> None:
    tiny = report["presets"]["tiny"]
    # fp32 always; bf16 where the CPU multiplies it natively (else the report says why not).
    assert "fp32" in tiny["training"]
    assert ("bf16" in tiny["training"]) == (tiny["training_bf16_skipped"] is None)
    for precision, train in tiny["training"].items():
        assert set(train["results"]) == {"minillama-eager", "minillama-compiled", "transformers-eager",
                                         "transformers-compiled"}
        first_losses = [r["first_loss"] for r in train["results"].values()]
        # All start from the same weights and batch: the same loss up to round-off.
        assert max(first_losses) - min(first_losses) < (1e-4 if precision == "fp32" else 5e-2)
        assert abs(first_losses[0] - math.log(2048)) < 0.5  # a fresh model is close to uniform
        for r in train["results"].values():
            assert len(r["times_s"]) == report["settings"]["steps"]
            assert all(positive(t) for t in r["times_s"]) and positive(r["first_call_s"])
            assert r["tokens_per_s"] == pytest.approx(train["tokens_per_step"] / r["median_s"])
            assert r["min_s"] <= r["median_s"]
        tps = {name: r["tokens_per_s"] for name, r in train["results"].items()}
        assert train["ratios"]["minillama-compiled / transformers-eager"] == pytest.approx(
            tps["minillama-compiled"] / tps["transformers-eager"])


def check_decode_and_context(report: dict) -> None:
    tiny = report["presets"]["tiny"]
    assert set(tiny["decode"]) == {"batch_1", "batch_8"}
    for dec in tiny["decode"].values():
        assert dec["tokens_match"] is True
        tps = {name: r["tokens_per_s"] for name, r in dec["results"].items()}
        assert set(tps) == {"minillama-eager", "minillama-compiled", "transformers-dynamic", "transformers-static"}
        assert all(positive(x) for x in tps.values())
        assert dec["ratios"]["minillama-compiled / best transformers"] == pytest.approx(
            tps["minillama-compiled"] / max(tps["transformers-dynamic"], tps["transformers-static"]))
    ks = tiny["k_samples"]
    assert (ks["prompts"], ks["k"]) == (8, 4)
    # The same uniforms for every sample, whichever way it is computed: the same tokens.
    assert all(share >= 0.9 for share in ks["samples_identical"].values())
    base = ks["results"]["per-sample prefill, eager"]["tokens_per_s"]
    assert ks["ratios"]["prefill once, compiled / per-sample prefill, eager"] == pytest.approx(
        ks["results"]["prefill once, compiled"]["tokens_per_s"] / base)
    ctx = tiny["context"]
    lengths = ctx["context_lengths"]
    assert lengths == sorted(set(lengths)) and lengths[0] == 16
    for series in ctx["ms_per_token"].values():
        assert len(series) == len(lengths) and all(positive(ms) for ms in series)
    targets = report["targets"]
    assert set(targets) == {
        "tiny fp32: training minillama-compiled / transformers-eager >= 1.5",
        "tiny: cached decode batch_1 minillama-compiled / best transformers >= 3.0",
        "tiny: cached decode batch_8 minillama-compiled / best transformers >= 2.0",
        "tiny: K-sample throughput prefill once, compiled / per-sample prefill, eager >= 3.0",
    } | ({"tiny bf16: training minillama-compiled / transformers-eager >= 1.5"} if "bf16" in tiny["training"] else set())
    name = "tiny: cached decode batch_8 minillama-compiled / best transformers >= 2.0"
    assert targets[name]["met"] == (tiny["decode"]["batch_8"]["ratios"]["minillama-compiled / best transformers"] >= 2.0)


@pytest.mark.parametrize("max_seq_len, steps, max_context, expected", [
    (256, 5, None, [16, 32, 64, 128, 250]),
    (256, 2, 64, [16, 32, 64]),
    (1024, 5, 100, [16, 32, 64, 100]),
    (40, 3, None, [16, 32, 36]),
])
def test_context_lengths_leave_room_for_the_timed_steps(max_seq_len, steps, max_context, expected):
    assert bench.context_lengths(max_seq_len, steps, max_context) == expected


def test_registered_and_help(capsys):
    from minillama.bench import BENCHMARKS, main

    assert BENCHMARKS["model"][0] == "minillama.bench.model"
    with pytest.raises(SystemExit) as exit_info:
        main(["model", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "minillama bench model" in out and "--quick" in out and "--out-dir" in out


def test_default_out_dir_is_benchmarks():
    assert bench.parse_args([]).out_dir == Path("benchmarks")


def test_committed_report_still_reads():
    # The results in benchmarks/ were written before the benchmark moved into the package: the
    # same code still reads them.
    report = json.loads((ROOT / "benchmarks" / "model_cpu.json").read_text())
    table = bench.markdown_table(report)
    assert all(f"| {preset} | training tokens/s" in table for preset in report["presets"])
    assert set(bench.targets(report["presets"])) == set(report["targets"])
