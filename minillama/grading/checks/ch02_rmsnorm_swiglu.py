"""Chapter 02 checks: ``rms_norm``, ``swiglu_hidden_dim`` and ``swiglu``.

Shapes: ``x (..., c)``; SwiGLU weights in ``nn.Linear`` layout, ``w1, w3 (f, c)``, ``w2 (c, f)``.
"""

from __future__ import annotations

import torch

from ...config import LlamaConfig
from ...mlp import SwiGLU
from ...norm import RMSNorm
from ..check import Checks, Learner, expect_equal, expect_tensor, expect_tensor_like, seeded

CHECKS = Checks()


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    norm = RMSNorm(x.shape[-1], eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def reference_swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    config = LlamaConfig(dim=w1.shape[1], n_heads=1, hidden_dim=w1.shape[0])
    mlp = SwiGLU(config)
    with torch.no_grad():
        for linear, weight in ((mlp.w1, w1), (mlp.w2, w2), (mlp.w3, w3)):
            linear.weight.copy_(weight)
        return mlp(x)


def _weights(c: int, f: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w1, w3 = (torch.randn(f, c, generator=gen) / c**0.5 for _ in range(2))
    w2 = torch.randn(c, f, generator=gen) / f**0.5
    return w1, w2, w3


@CHECKS.add(points=2, hint="divide by sqrt(mean(x^2) + eps) over the last axis (no mean subtracted), "
                           "then multiply by weight")
def rms_norm_matches_reference(learner: Learner) -> None:
    rms_norm = learner.function("rms_norm")
    gen = seeded(0)
    x = torch.randn(2, 5, 16, generator=gen) * 3 + 1  # a nonzero mean: RMS and std differ
    weight = torch.rand(16, generator=gen) + 0.5
    expected = reference_rms_norm(x, weight, 1e-5)
    expect_tensor(rms_norm(x.clone(), weight.clone(), 1e-5), expected, "rms_norm(x, weight, 1e-5)")


@CHECKS.add(points=1, hint="eps goes inside the square root, added to the mean of squares")
def rms_norm_eps_inside_sqrt(learner: Learner) -> None:
    rms_norm = learner.function("rms_norm")
    x = torch.randn(3, 8, generator=seeded(1)) * 1e-3  # so small that eps dominates
    weight = torch.ones(8)
    for eps in (1e-2, 1e-6):
        expected = reference_rms_norm(x, weight, eps)
        expect_tensor(rms_norm(x.clone(), weight.clone(), eps), expected, f"rms_norm(small x, eps={eps:g})",
                      atol=1e-6, rtol=1e-4)
    zeros = torch.zeros(2, 8)
    expect_tensor(rms_norm(zeros, weight, 1e-5), zeros, "rms_norm(zeros)", atol=0, rtol=0)


@CHECKS.add(points=1, hint="compute the statistics in float32 (x.float()) and cast back with .to(x.dtype)")
def rms_norm_keeps_dtype(learner: Learner) -> None:
    rms_norm = learner.function("rms_norm")
    gen = seeded(2)
    x = (torch.randn(4, 32, generator=gen) * 20).to(torch.bfloat16)
    weight = (torch.rand(32, generator=gen) + 0.5).to(torch.bfloat16)
    expected = reference_rms_norm(x, weight, 1e-5)
    expect_tensor(rms_norm(x.clone(), weight.clone(), 1e-5), expected, "rms_norm(bf16 x, bf16 weight)",
                  atol=2e-2, rtol=2e-2)


@CHECKS.add(points=2, hint="hidden = int(2 * 4 * dim / 3), times ffn_dim_multiplier when given, then "
                           "rounded UP to a multiple of multiple_of")
def swiglu_hidden_dim_matches_presets(learner: Learner) -> None:
    swiglu_hidden_dim = learner.function("swiglu_hidden_dim")
    for preset in ("llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "tiny"):
        config = LlamaConfig.from_preset(preset)
        got = swiglu_hidden_dim(config.dim, config.multiple_of, config.ffn_dim_multiplier)
        expect_equal(got, config.ffn_hidden_dim, f"swiglu_hidden_dim for {preset} "
                     f"(dim={config.dim}, multiple_of={config.multiple_of}, "
                     f"ffn_dim_multiplier={config.ffn_dim_multiplier})")


@CHECKS.add(points=1, hint="round up with multiple_of * ceil(hidden / multiple_of); an exact multiple stays "
                           "as it is, and the result is an int")
def swiglu_hidden_dim_rounds_up(learner: Learner) -> None:
    swiglu_hidden_dim = learner.function("swiglu_hidden_dim")
    # Exact multiples (96/64, 64/10, 100/7 with 1.5) must stay; the others round up.
    cases = [(96, 64, None), (120, 48, None), (200, 48, 1.3), (64, 10, None), (100, 7, 1.5), (50, 16, None)]
    for dim, multiple_of, multiplier in cases:
        expected = LlamaConfig(dim=dim, n_heads=1, multiple_of=multiple_of,
                               ffn_dim_multiplier=multiplier).ffn_hidden_dim
        got = swiglu_hidden_dim(dim, multiple_of, multiplier)
        expect_equal(got, expected, f"swiglu_hidden_dim({dim}, {multiple_of}, {multiplier})")


@CHECKS.add(points=2, hint="w2(silu(w1 x) * w3 x): the SiLU gate is w1, the plain up projection w3, and an "
                           "(out, in) weight w applies as x @ w.T")
def swiglu_matches_reference(learner: Learner) -> None:
    swiglu = learner.function("swiglu")
    gen = seeded(3)
    x = torch.randn(2, 5, 16, generator=gen)
    w1, w2, w3 = _weights(16, 48, gen)
    expected = reference_swiglu(x, w1, w2, w3)
    expect_tensor(swiglu(x.clone(), w1.clone(), w2.clone(), w3.clone()), expected, "swiglu(x, w1, w2, w3)")


@CHECKS.add(points=1, hint="act on the last axis only (x @ w.T or einsum '... c, f c -> ... f'), so that "
                           "any leading axes work")
def swiglu_any_leading_axes(learner: Learner) -> None:
    swiglu = learner.function("swiglu")
    gen = seeded(4)
    w1, w2, w3 = _weights(8, 24, gen)
    x = torch.randn(2, 3, 4, 8, generator=gen)
    whole = swiglu(x.clone(), w1.clone(), w2.clone(), w3.clone())
    expect_tensor_like(whole, x, "swiglu(x of shape (2, 3, 4, 8))")
    for index in ((0,), (1, 2), (0, 1, 3)):  # one row at a time gives the same numbers
        part = swiglu(x[index].clone(), w1.clone(), w2.clone(), w3.clone())
        expect_tensor(part, whole[index], f"swiglu(x{list(index)}) against swiglu(x){list(index)}")

