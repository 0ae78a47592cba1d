"""The Triton FlashAttention-2 kernel against the einops reference, on the CPU interpreter.

The interpreter runs every program as NumPy code, so the shapes are small; the covering set below
still puts each length (1, 17, 65, 130), each head grouping (MHA, GQA 2 and 4, MQA) and both head
dims (32, 64) in several combinations of causal/non-causal and t == s / t < s. With the
interpreter's tiles (32 query x 16 key rows forward, 16 x 32 backward) these lengths give partial
tail tiles, diagonals that straddle several tiles, and a KV-cache shift ``s - t`` that is not a
multiple of any tile.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from minillama.attention import eager_attention
from minillama.model import Llama
from minillama.sequences import causal_lm_loss

kernels = pytest.importorskip("minillama.kernels")
flash = pytest.importorskip("minillama.kernels.flash")

CUDA = torch.cuda.is_available()
on_interpreter = pytest.mark.skipif(CUDA, reason="interpreter tests run where there is no CUDA GPU")

# (b, h, g, t, s, d, causal): h/g = 1 (MHA), 2, 4 (GQA) and g = 1 (MQA).
T_EQUALS_S = [
    (1, 2, 2, 1, 1, 32, True),
    (1, 2, 2, 17, 17, 64, True),
    (2, 4, 2, 65, 65, 32, True),
    (1, 8, 2, 65, 65, 32, True),
    (1, 3, 1, 130, 130, 64, True),
    (1, 4, 1, 65, 65, 64, False),
    (1, 2, 2, 130, 130, 64, False),
    (2, 8, 2, 17, 17, 32, False),
    (1, 3, 1, 1, 1, 32, False),
]
T_BELOW_S = [  # queries are the last t of s positions (prefill after a cache, or one decoding step)
    (1, 4, 2, 1, 65, 64, True),
    (2, 2, 2, 17, 130, 32, True),
    (1, 8, 2, 65, 130, 64, True),
    (1, 3, 1, 17, 65, 32, True),
    (1, 4, 1, 1, 130, 32, True),
    (1, 2, 2, 1, 17, 64, False),
    (1, 4, 2, 17, 65, 32, False),
    (1, 8, 2, 65, 130, 32, False),
]
T_ABOVE_S = [(1, 3, 1, 130, 17, 64, False)]  # non-causal only: cross-attention shaped


def _inputs(b, h, g, t, s, d, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype).requires_grad_()
               for shape in ((b, h, t, d), (b, g, s, d), (b, g, s, d)))
    do = torch.randn((b, h, t, d), generator=gen).to(dtype)
    return q, k, v, do


def _forward_backward(fn, q, k, v, do):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), do))


def _reference(q, k, v, do, causal, scale=None):
    def eager(q, k, v):
        return eager_attention(q, k, v, None, causal=causal, scale=scale)

    return _forward_backward(eager, q, k, v, do)


def _assert_all_close(got, want, atol, rtol=0.0):
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@on_interpreter
@pytest.mark.parametrize("b,h,g,t,s,d,causal", T_EQUALS_S + T_BELOW_S + T_ABOVE_S)
def test_matches_eager_fp32(b, h, g, t, s, d, causal):
    q, k, v, do = _inputs(b, h, g, t, s, d)
    got = _forward_backward(lambda q, k, v: kernels.flash_attention(q, k, v, causal=causal), q, k, v, do)
    _assert_all_close(got, _reference(q, k, v, do, causal), atol=1e-5)


@on_interpreter
def test_sm_scale_is_applied():
    q, k, v, do = _inputs(1, 4, 2, 33, 33, 32, seed=1)
    got = _forward_backward(lambda q, k, v: kernels.flash_attention(q, k, v, sm_scale=0.37), q, k, v, do)
    _assert_all_close(got, _reference(q, k, v, do, causal=True, scale=0.37), atol=1e-5)


@on_interpreter
def test_strided_inputs_match():
    """The layouts the model passes: q is a (b, t, h, d) buffer seen as (b, h, t, d); k and v are a
    slice of a longer KV-cache buffer; the output gradient is not contiguous either."""
    b, h, g, t, s, d = 1, 4, 2, 20, 40, 32
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(b, t, h, d, generator=gen).transpose(1, 2).requires_grad_()
    cache = torch.randn(2, b, g, 64, d, generator=gen)
    k, v = cache[0, :, :, :s].requires_grad_(), cache[1, :, :, :s].requires_grad_()
    do = torch.randn(b, t, h, d, generator=gen).transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or do.is_contiguous())
    got = _forward_backward(kernels.flash_attention, q, k, v, do)
    _assert_all_close(got, _reference(q, k, v, do, causal=True), atol=1e-5)
    assert got[0].stride() == q.stride(), "the output keeps the query's memory layout"


@on_interpreter
def test_fp16_close_to_fp32_reference():
    q, k, v, do = _inputs(1, 4, 1, 65, 65, 64, dtype=torch.float16, seed=3)
    got = _forward_backward(kernels.flash_attention, q, k, v, do)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    want = tuple(x.half() for x in _reference(q32, k32, v32, do.float(), causal=True))
    _assert_all_close(got, want, atol=1e-2, rtol=1e-2)


@on_interpreter
def test_gqa_backward_is_deterministic():
    q, k, v, do = _inputs(1, 4, 1, 40, 40, 32, seed=4)
    first = _forward_backward(kernels.flash_attention, q, k, v, do)
    second = _forward_backward(kernels.flash_attention, q, k, v, do)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@on_interpreter
@pytest.mark.slow
def test_tiny_model_trains_like_sdpa(tiny_config):
    """A few AdamW steps with attn_backend='triton' follow the 'sdpa' run loss for loss."""
    config = tiny_config(n_heads=2, n_kv_heads=1, vocab_size=61, max_seq_len=32)
    batch = torch.randint(0, config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(5))

    def losses(backend):
        model = Llama(config.replace(), seed=0)
        model.attn_backend = backend
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        history = []
        for _ in range(4):
            loss = causal_lm_loss(model(batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
        return history

    triton_losses, sdpa_losses = losses("triton"), losses("sdpa")
    assert triton_losses[-1] < triton_losses[0] - 0.05, "the model learns"
    for step, (a, b) in enumerate(zip(triton_losses, sdpa_losses)):
        assert math.isclose(a, b, abs_tol=1e-4), f"step {step}: triton {a} vs sdpa {b}"


@on_interpreter
def test_kv_cache_decoding_matches_sdpa(random_llama):
    """Prefill then one-token steps on the KV cache: the kernel reads the cache slice in place and
    aligns the causal mask to the end (t < s)."""
    model = random_llama(seed=6, n_heads=2, n_kv_heads=1)  # head dim 32, MQA
    ids = torch.randint(0, model.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(6))

    def step_logits(backend):
        model.attn_backend = backend
        cache = model.new_cache(2, 13)
        with torch.no_grad():
            out = [model(ids[:, :9], cache=cache)]
            out += [model(ids[:, i:i + 1], cache=cache) for i in range(9, 13)]
        return torch.cat(out, dim=1)

    torch.testing.assert_close(step_logits("triton"), step_logits("sdpa"), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- errors


def _qkv(h=4, g=2, t=8, s=8, d=32, dtype=torch.float32):
    return tuple(torch.zeros(1, heads, n, d, dtype=dtype) for heads, n in ((h, t), (g, s), (g, s)))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(d=48), ValueError, r"head dim d=48 .*allowed: \(32, 64, 128\)"),
    (dict(h=4, g=3), ValueError, r"h=4 must be a multiple of key/value heads g=3"),
    (dict(t=9, s=8), ValueError, r"causal attention needs t <= s"),
])
def test_unsupported_shapes_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        kernels.flash_attention(*_qkv(**kwargs))


def test_mismatched_inputs_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        kernels.flash_attention(q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="must match q"):
        kernels.flash_attention(q, torch.zeros(2, 2, 8, 32), torch.zeros(2, 2, 8, 32))
    with pytest.raises(ValueError, match=r"q must be 4-d"):
        kernels.flash_attention(q[0], k, v)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        kernels.flash_attention(q, k.numpy(), v)
    with pytest.raises(TypeError, match="share one dtype"):
        kernels.flash_attention(q, k.half(), v)
    with pytest.raises(ValueError, match="sm_scale must be a finite float > 0"):
        kernels.flash_attention(q, k, v, sm_scale=-1.0)


@on_interpreter
def test_bf16_on_interpreter_raises():
    with pytest.raises(TypeError, match=r"bfloat16 is not supported by the interpreter"):
        kernels.flash_attention(*_qkv(dtype=torch.bfloat16))


@pytest.mark.skipif(CUDA, reason="checks the message shown where there is no GPU")
def test_no_gpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(flash, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="no CUDA GPU is available .* TRITON_INTERPRET=1"):
        kernels.flash_attention(*_qkv())


def test_attention_backend_rejects_padding_mask():
    from minillama.attention import triton_attention

    q, k, v = _qkv()
    with pytest.raises(ValueError, match="padding"):
        triton_attention(q, k, v, torch.ones(1, 1, 8, 8, dtype=torch.bool))


# ---------------------------------------------------------------- GPU (skipped without CUDA)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("h,g,t,s,d,causal", [
    (8, 8, 1000, 1000, 64, True), (16, 4, 777, 777, 128, True), (8, 1, 513, 513, 128, False),
    (8, 2, 1, 1500, 64, True), (4, 4, 300, 1024, 32, True),
])
def test_gpu_matches_sdpa(dtype, h, g, t, s, d, causal):
    from minillama.attention import sdpa_attention

    q, k, v, do = (x.cuda() for x in _inputs(2, h, g, t, s, d, dtype=dtype))
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    got = _forward_backward(kernels.flash_attention, q, k, v, do)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    want = _forward_backward(lambda q, k, v: sdpa_attention(q, k, v, None, causal=causal), q32, k32, v32,
                             do.float())
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    _assert_all_close(got, tuple(x.to(dtype) for x in want), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gpu_rejects_fp32():
    q, k, v = (x.cuda() for x in _qkv())
    with pytest.raises(TypeError, match="not supported on the GPU"):
        kernels.flash_attention(q, k, v)


# ---------------------------------------------------------------- compiling for Hopper without a GPU

_COMPILE_FOR_HOPPER = """
import sys
try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as err:
    print("triton internals moved:", err)
    sys.exit(3)
from minillama.kernels import flash_backward as fb, flash_forward as ff

SCALARS = {"qk_scale": "fp32", "sm_scale": "fp32"}
for kernel in (ff._flash_forward_kernel, fb._dkdv_kernel, fb._dq_kernel, fb._delta_kernel):
    config = kernel.configs[0] if hasattr(kernel, "configs") else triton.Config({"BLOCK_M": 128})
    fn = kernel.fn if hasattr(kernel, "configs") else kernel
    constexprs = {"HEAD_DIM": 128, **config.kwargs, **({"CAUSAL": True} if "CAUSAL" in fn.arg_names else {})}
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("LSE", "DELTA"):
            signature[name] = "*fp32"
        elif name in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV"):
            signature[name] = "*bf16"
        else:
            signature[name] = SCALARS.get(name, "i32")
    triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    print("compiled", fn.__name__)
"""


@pytest.mark.slow
def test_kernels_compile_for_hopper():
    """The interpreter accepts code the compiler rejects; compile every kernel for sm_90 (bf16,
    d = 128, causal, the first Hopper configuration) down to a cubin, which needs no GPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER], env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("compiled") == 4
