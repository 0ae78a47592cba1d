"""The precision policy (minillama.precision), the compile fallback (minillama.compiler) and the
Speed settings every stage takes (minillama.speed)."""

from __future__ import annotations

import argparse
import contextlib

import pytest
import torch

from minillama import compiler, precision
from minillama.speed import Speed, add_speed_arguments, speed_from_args

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("flags, native", [({"avx2", "fma"}, False), ({"avx512f", "avx512_bf16"}, True),
                                           ({"amx_bf16", "amx_tile"}, True), ({"asimd", "bf16"}, True), (set(), False)])
def test_auto_is_bf16_exactly_where_the_cpu_multiplies_bf16(monkeypatch, flags: set[str], native: bool) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.native_bf16("cpu") is native
    assert precision.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert precision.describe("auto", "cpu") == ("bf16 (auto: native bf16 on this cpu)" if native
                                                 else "fp32 (auto: no native bf16 on this cpu)")
    # Forcing either ignores the hardware.
    assert precision.resolve_precision("fp32", "cpu") == "fp32" and precision.resolve_precision("bf16", "cpu") == "bf16"
    assert precision.describe("bf16", "cpu") == "bf16 (forced)"


def test_this_machines_flags_are_read() -> None:
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    assert precision.native_bf16("cpu") == any(f in text.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


def test_autocast_follows_the_resolved_precision() -> None:
    x, w = torch.randn(2, 8), torch.randn(8, 8)
    with precision.autocast("fp32", "cpu"):
        assert (x @ w).dtype == torch.float32
    with precision.autocast("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    assert isinstance(precision.autocast("fp32", "cpu"), contextlib.nullcontext)
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
        precision.resolve_precision("fp16", "cpu")


def test_compile_falls_back_to_eager_with_one_line_when_there_is_no_compiler(monkeypatch, capsys) -> None:
    def fn(x):
        return x + 1

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiler.shutil, "which", lambda name: None)
    assert "no C++ compiler found (looked for g++, c++, clang++" in compiler.compiler_missing("cpu")
    assert compiler.compile_or_eager(fn, True, "cpu", "test step") is fn
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test step: torch.compile is not available" in err and "running eager" in err
    assert compiler.compile_or_eager(fn, False, "cpu", "test step") is fn
    assert capsys.readouterr().err == ""  # not asked for, nothing said


def test_compile_is_used_where_a_compiler_is_found(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "my-c++")
    monkeypatch.setattr(compiler.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "my-c++" else None)
    assert compiler.compiler_missing("cpu") is None
    def fn(x):
        return x + 1

    compiled = compiler.compile_or_eager(fn, True, "cpu", "test step")
    assert compiled is not fn and getattr(compiled, "_torchdynamo_orig_callable", None) is fn


def test_speed_settings_reach_the_trainer_and_the_sampler() -> None:
    speed = Speed("fp32", compile_training=True)
    assert speed.training() == {"precision": "fp32", "compile": True}
    assert speed.sampling() == {"precision": "fp32", "compile": False}
    with pytest.raises(ValueError, match="precision must be one of"):
        Speed("half")
    parser = argparse.ArgumentParser()
    add_speed_arguments(parser)
    assert speed_from_args(parser.parse_args([])) == Speed()
    assert speed_from_args(parser.parse_args(["--precision", "bf16", "--compile-decoding"])) == Speed(
        "bf16", compile_decoding=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])
