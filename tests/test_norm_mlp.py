"""RMSNorm and the SwiGLU feed-forward against their formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minillama.mlp import SwiGLU
from minillama.norm import RMSNorm


def test_rmsnorm_matches_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 32, generator=gen) * 3 + 1
    norm = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(32, generator=gen))
    rms = torch.sqrt((x * x).sum(-1, keepdim=True) / 32 + 1e-6)
    torch.testing.assert_close(norm(x), x / rms * norm.weight, rtol=1e-6, atol=1e-6)


def test_rmsnorm_output_has_unit_rms_and_ignores_scale_of_input() -> None:
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    norm = RMSNorm(64, eps=0.0)
    y = norm(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4))
    torch.testing.assert_close(norm(1000 * x), y)  # no mean subtraction, no bias: pure rescaling


def test_rmsnorm_statistics_in_float32_for_bf16_input() -> None:
    gen = torch.Generator().manual_seed(2)
    # Wide rows with a spread of magnitudes, where a bf16 sum of squares would lose the small ones.
    x = (torch.randn(8, 4096, generator=gen) * torch.logspace(-2, 2, 4096)).to(torch.bfloat16)
    norm = RMSNorm(4096).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(4096, generator=gen))
    x32 = x.float()
    reference = (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps)).to(torch.bfloat16) * norm.weight
    y = norm(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, reference, rtol=0, atol=0)
    # The same formula evaluated in bf16 throughout lands elsewhere: the float32 path is what matters.
    in_bf16 = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    assert not torch.equal(in_bf16, reference)


def test_swiglu_shape_and_formula(tiny_config) -> None:
    config = tiny_config(dim=64, multiple_of=16)
    ffn = SwiGLU(config)
    assert (ffn.w1.weight.shape, ffn.w3.weight.shape, ffn.w2.weight.shape) == (
        (config.ffn_hidden_dim, 64), (config.ffn_hidden_dim, 64), (64, config.ffn_hidden_dim))
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(3))
    y = ffn(x)
    assert y.shape == x.shape
    gate = x @ ffn.w1.weight.T
    up = x @ ffn.w3.weight.T
    expected = (gate * torch.sigmoid(gate) * up) @ ffn.w2.weight.T
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)


def test_swiglu_gate_is_w1_not_w3(tiny_config) -> None:
    # Swapping the gate and the up projection changes the output: the names must not be mixed up.
    ffn = SwiGLU(tiny_config())
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(4))
    swapped = ffn.w2(F.silu(ffn.w3(x)) * ffn.w1(x))
    assert (ffn(x) - swapped).abs().max() > 1e-3
