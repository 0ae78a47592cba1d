"""The attention benchmark: its command lines, its FLOP accounting and a quick CPU run's json."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from minillama import cli
from minillama.bench import attention as bench


def test_help_through_both_entry_points(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "attention", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "minillama.bench", "attention", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--seq-lens" in done.stdout


def test_bench_dispatch_lists_and_rejects(capsys):
    from minillama.bench import main

    assert main([]) == 0 and "attention" in capsys.readouterr().out
    assert main(["nonsense"]) == 2 and "unknown benchmark 'nonsense'" in capsys.readouterr().err


def test_quick_is_cpu_only():
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--quick", "--device", "cuda"])
    assert exit_info.value.code == 2


def test_flop_accounting():
    case = bench.Case("forward", "sdpa", head_dim=64, causal=False, n_heads=32, n_kv_heads=8, seq_len=1024, batch=16)
    assert case.flops() == 4 * 16 * 32 * 1024 * 1024 * 64
    causal = bench.Case("forward", "sdpa", 64, True, 32, 8, 1024, 16)
    assert causal.flops() == case.flops() / 2
    both = bench.Case("forward_backward", "sdpa", 64, True, 32, 8, 1024, 16)
    assert both.flops() == 3.5 * causal.flops()
    assert case.attention == "GQA 4:1" and bench.Case("forward", "x", 64, True, 8, 8, 1, 1).attention == "MHA"


def test_ratios_compare_within_a_case():
    def row(backend, tflops, seq_len=64, status="ok"):
        return dict(backend=backend, tflops=tflops, status=status, seq_len=seq_len, **{"pass": "forward"},
                    head_dim=64, causal=True, n_kv_heads=2)

    rows = [row("sdpa", 2.0), row("sdpa_flash", 4.0), row("eager", 1.0), row("eager", 9.0, seq_len=128),
            row("sdpa_efficient", None, status="skipped")]
    bench.add_ratios(rows)
    assert rows[2]["vs_sdpa"] == 0.5 and rows[2]["vs_sdpa_flash"] == 0.25
    assert rows[3]["vs_sdpa"] is None, "no sdpa figure at that length: no ratio"
    assert rows[4]["vs_sdpa"] is None


@pytest.mark.slow
def test_quick_cpu_run_writes_a_complete_report(tmp_path):
    assert bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--seed", "3"]) == 0
    report = json.loads((tmp_path / "attention_cpu.json").read_text())
    assert (tmp_path / "attention_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report["versions"]) == {"python", "torch", "triton"} and report["date"] and report["device"]

    settings, rows = report["settings"], report["results"]
    expected = set(itertools.product(bench.PASSES, (64, 128), (True, False), ("MHA", "GQA 4:1"),
                                     settings["seq_lens"], bench.CPU_BACKENDS))
    seen = [(r["pass"], r["head_dim"], r["causal"], r["attention"], r["seq_len"], r["backend"]) for r in rows]
    assert len(seen) == len(set(seen)) and set(seen) == expected, "every case exactly once"
    for r in rows:
        assert r["status"] in ("ok", "skipped")
        if r["status"] == "skipped":
            assert r["reason"]
            continue
        assert r["batch"] == settings["tokens"] // r["seq_len"]
        assert r["tflops"] == pytest.approx(r["flops"] / (r["ms"] * 1e-3) / 1e12)
        assert r["peak_extra_mib"] is None, "CPU: not measured, not invented"
    assert all(r["status"] == "ok" for r in rows if r["backend"] in ("eager", "sdpa", "sdpa_math"))

    by_case = {(r["pass"], r["head_dim"], r["causal"], r["attention"], r["seq_len"], r["backend"]): r for r in rows}
    for key, r in by_case.items():
        if r["status"] == "ok":
            assert r["vs_sdpa"] == pytest.approx(r["tflops"] / by_case[key[:-1] + ("sdpa",)]["tflops"])

    smoke = report["triton_smoke"]
    assert smoke["status"] == "ok", smoke.get("reason")
    assert "not a speed figure" in smoke["kind"] and smoke["passed"] is True
    assert max(smoke["max_abs_err_vs_eager"].values()) <= 1e-4
    assert not any(r["backend"] == "triton" for r in rows), "the interpreter run is no table entry"
