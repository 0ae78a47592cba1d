"""Which precision a run computes in: bf16 autocast where the hardware multiplies bf16 natively,
float32 elsewhere. Every stage, the trainer and the samplers ask here.

Autocast runs the matmuls (and a few other ops) on bf16 copies of their inputs; the weights, their
gradients and AdamW's moments stay float32, so small updates are not rounded away. Whether that is
faster depends on the hardware alone, and by far:

* CUDA GPUs from Ampere on, and x86 CPUs with ``avx512_bf16`` or ``amx_bf16`` (Xeon from Cooper
  Lake / Sapphire Rapids, AMD Zen 4): bf16 multiplies natively, about twice as fast as float32
  (the tiny preset's training step on a 2-core Xeon with AVX512-BF16: 2.0x);
* any other CPU (AVX2 only, e.g. an AMD EPYC Zen 3): bf16 is emulated, and a bf16 matmul takes
  40 to 100 times longer than the float32 one (measured on such a 2-core EPYC, torch 2.13).

So ``"auto"`` reads the CPU's feature flags rather than guessing from the device type, and
``"fp32"`` / ``"bf16"`` force either.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
# CPU feature flags that mean native bf16 matmuls: x86 (in /proc/cpuinfo) and Arm (Linux "Features").
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the operating system reports them (empty when it does not)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags: set[str] = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
        return frozenset(flags)
    if platform.system() == "Darwin":  # Apple M2 and later report FEAT_BF16
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        return frozenset({"bf16"}) if out == "1" else frozenset()
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 natively (module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(cpu_flags() & BF16_CPU_FLAGS)
    return False


def check_precision(precision: str, owner: str = "precision") -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`; a ``ValueError`` naming ``owner`` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"{owner} must be one of {PRECISIONS}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` (one of :data:`PRECISIONS`) means on ``device``."""
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``with autocast(precision, device):`` bf16 autocast when ``precision`` resolves to bf16 there,
    nothing otherwise."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def describe(precision: str, device: torch.device | str) -> str:
    """One line for logs and reports: what was asked, what it resolved to, and why."""
    resolved = resolve_precision(precision, device)
    if precision != "auto":
        return f"{resolved} (forced)"
    device = torch.device(device)
    why = "native bf16" if resolved == "bf16" else "no native bf16"
    return f"{resolved} (auto: {why} on this {device.type})"
