"""Attention benchmark: TFLOP/s and peak memory of every attention implementation, side by side.

``python -m minillama.bench attention`` (or ``minillama bench attention``) sweeps the sequence
length at a fixed number of tokens per batch (16k on a GPU: batch 16 at 1k ... batch 1 at 16k),
for head dims 64 and 128, causal and non-causal, multi-head and grouped-query (4 query heads per
K/V head) attention, forward and forward+backward. Every implementation runs on the same inputs
in the same process:

* ``triton``: :func:`minillama.kernels.flash_attention` (FlashAttention-2 in Triton);
* ``sdpa``: ``F.scaled_dot_product_attention`` with PyTorch's own backend choice;
* ``sdpa_flash`` / ``sdpa_efficient`` / ``sdpa_math``: SDPA forced to one backend;
* ``eager``: :func:`minillama.attention.eager_attention`, the einops path that builds the
  ``(t, s)`` score matrix (skipped, with the reason, where it would not fit in memory).

FLOPs: ``4 b h t s d`` for the forward pass (two matmuls), half of it when causal, and 3.5 times
the forward pass for forward+backward (five matmuls instead of two), the usual FlashAttention
accounting. A time is the median of the timed calls of :mod:`minillama.bench.harness` (CUDA
events on a GPU). Peak memory is what one call allocates beyond its inputs (CUDA's allocator; not
measured on a CPU).

On a CPU the same table runs at small sizes in float32 for the backends that exist there, and the
Triton kernel runs once, at one small shape, through Triton's interpreter: a correctness smoke run
checked against the einops reference, whose time is not a speed figure.

Writes ``attention_<device>.json`` and ``.png`` into ``--out`` (default ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attention import eager_attention
from ..fileio import save_json
from .harness import (available_cpus, busy_warning, device_name, device_slug, interleaved_times, load_average,
                      median_ms, synchronize, utc_now, versions)

GPU_BACKENDS = ("triton", "sdpa", "sdpa_flash", "sdpa_efficient", "eager")
CPU_BACKENDS = ("sdpa", "sdpa_flash", "sdpa_math", "eager")
PASSES = ("forward", "forward_backward")
GQA_RATIO = 4
BWD_FLOP_FACTOR = 3.5  # forward + backward = 2 + 5 matmuls over the forward's 2

# Sizes. GPU: the sweep. CPU: small enough for a 2-core machine.
GPU_SETTINGS = dict(dtype="bfloat16", model_dim=2048, tokens=16384, seq_lens=(1024, 2048, 4096, 8192, 16384),
                    warmup=3, repeats=10)
CPU_SETTINGS = dict(dtype="float32", model_dim=512, tokens=1024, seq_lens=(128, 256, 512, 1024), warmup=1, repeats=3)
CPU_QUICK = dict(dtype="float32", model_dim=512, tokens=128, seq_lens=(32, 64), warmup=1, repeats=1)
SMOKE_SHAPE = dict(b=1, h=4, g=1, t=128, d=64)  # MQA: the backward's group loop runs 4 heads
SMOKE_QUICK = dict(b=1, h=2, g=1, t=48, d=32)
SMOKE_TOL = 1e-4

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One row of the table: shapes ``q (b, h, t, d)``, ``k, v (b, g, t, d)``."""

    pass_: str
    backend: str
    head_dim: int
    causal: bool
    n_heads: int
    n_kv_heads: int
    seq_len: int
    batch: int

    @property
    def attention(self) -> str:
        return "MHA" if self.n_heads == self.n_kv_heads else f"GQA {self.n_heads // self.n_kv_heads}:1"

    def flops(self) -> float:
        fwd = 4.0 * self.batch * self.n_heads * self.seq_len * self.seq_len * self.head_dim
        fwd *= 0.5 if self.causal else 1.0
        return fwd * (BWD_FLOP_FACTOR if self.pass_ == "forward_backward" else 1.0)


# ---------------------------------------------------------------- implementations


def _sdpa(backend=None) -> Attend:
    from torch.nn.attention import sdpa_kernel

    def attend(q, k, v, causal):
        ctx = sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
        with ctx:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])

    return attend


def _triton(q, k, v, causal):
    from ..kernels import flash_attention  # imported late: TRITON_INTERPRET must be settled first

    return flash_attention(q, k, v, causal=causal)


def implementations() -> dict[str, Attend]:
    from torch.nn.attention import SDPBackend

    return {
        "triton": _triton,
        "sdpa": _sdpa(),
        "sdpa_flash": _sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa_efficient": _sdpa(SDPBackend.EFFICIENT_ATTENTION),
        "sdpa_math": _sdpa(SDPBackend.MATH),
        "eager": lambda q, k, v, causal: eager_attention(q, k, v, None, causal=causal),
    }


# ---------------------------------------------------------------- measuring


def peak_extra_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Memory one call allocates beyond what is already resident, in MiB (CUDA only)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _make_call(attend: Attend, inputs: dict[str, torch.Tensor], case: Case) -> Callable[[], object]:
    q, k, v, do = inputs["q"], inputs["k"], inputs["v"], inputs["do"]
    if case.pass_ == "forward":
        def call():
            with torch.no_grad():
                return attend(q, k, v, case.causal)
    else:
        def call():
            out = attend(q, k, v, case.causal)
            return torch.autograd.grad(out, (q, k, v), do)
    return call


def _eager_too_big(case: Case, device: torch.device) -> str | None:
    """Why the einops path would not fit: it holds ~10 bytes per score forward, ~16 with backward."""
    if case.backend != "eager" or device.type != "cuda":
        return None
    per_score = 16 if case.pass_ == "forward_backward" else 10
    need = case.batch * case.n_heads * case.seq_len**2 * per_score
    free, _ = torch.cuda.mem_get_info(device)
    if need > 0.9 * free:
        return (f"skipped: the (t, s) scores need ~{need / 2**30:.0f} GiB, "
                f"{free / 2**30:.0f} GiB free (out of memory)")
    return None


def measure(case: Case, attend: Attend, inputs: dict[str, torch.Tensor], device: torch.device,
            warmup: int, repeats: int) -> dict:
    """One table row: time, TFLOP/s and peak memory, or the reason the case could not run."""
    row = {**asdict(case), "pass": case.pass_, "attention": case.attention, "flops": case.flops()}
    del row["pass_"]
    reason = _eager_too_big(case, device)
    if reason is not None:
        return {**row, "status": "skipped", "reason": reason}
    call = _make_call(attend, inputs, case)
    with warnings.catch_warnings(record=True) as caught:  # SDPA explains a refused backend in warnings
        warnings.simplefilter("always")
        try:
            ms = median_ms(interleaved_times({"call": call}, warmup, repeats, device)["call"])
            peak = peak_extra_mib(call, device)
        except torch.OutOfMemoryError as err:
            torch.cuda.empty_cache()
            return {**row, "status": "skipped", "reason": f"skipped: out of memory ({_first_line(err)})"}
        except (RuntimeError, ValueError, TypeError, ImportError) as err:
            why = "".join(f" ({_first_line(w.message)})" for w in caught[:1])
            return {**row, "status": "skipped", "reason": f"unsupported: {_first_line(err)}{why}"}
    return {**row, "status": "ok", "ms": ms, "tflops": case.flops() / (ms * 1e-3) / 1e12, "peak_extra_mib": peak}


def _first_line(message: object) -> str:
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


def make_inputs(b: int, h: int, g: int, t: int, d: int, dtype: torch.dtype, device: torch.device,
                seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def draw(*shape):
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    q, k, v = draw(b, h, t, d), draw(b, g, t, d), draw(b, g, t, d)
    return {"q": q.requires_grad_(), "k": k.requires_grad_(), "v": v.requires_grad_(), "do": draw(b, h, t, d)}


def add_ratios(rows: list[dict]) -> None:
    """``vs_sdpa`` and ``vs_sdpa_flash``: TFLOP/s over that backend's on the same case and run."""
    def key(r):
        return (r["pass"], r["head_dim"], r["causal"], r["n_kv_heads"], r["seq_len"])

    ok = {(key(r), r["backend"]): r["tflops"] for r in rows if r["status"] == "ok"}
    for r in rows:
        for ref in ("sdpa", "sdpa_flash"):
            base = ok.get((key(r), ref))
            r[f"vs_{ref}"] = r["tflops"] / base if r["status"] == "ok" and base else None


def summarize(rows: list[dict]) -> dict:
    """Geometric mean over the table of each backend's ratio to SDPA default, per pass."""
    out: dict[str, dict[str, float]] = {}
    for pass_ in PASSES:
        for backend in sorted({r["backend"] for r in rows}):
            ratios = [r["vs_sdpa"] for r in rows if r["pass"] == pass_ and r["backend"] == backend and r["vs_sdpa"]]
            if ratios:
                out.setdefault(pass_, {})[backend] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    return out


# ---------------------------------------------------------------- the Triton smoke run (CPU)


def triton_smoke(shape: dict, seed: int) -> dict:
    """Run the kernel once through the interpreter, forward and backward, against the einops path."""
    info = {"kind": "correctness smoke run through Triton's interpreter (TRITON_INTERPRET=1); "
                    "its time is not a speed figure", "shape": shape, "dtype": "float32", "causal": True,
            "tolerance": SMOKE_TOL}
    try:
        from ..kernels import INTERPRET, flash_attention
    except ImportError as err:
        return {**info, "status": "skipped", "reason": f"triton is not importable: {err}"}
    if not INTERPRET:
        return {**info, "status": "skipped",
                "reason": "the kernels are compiled for a GPU: TRITON_INTERPRET was not 1 when minillama.kernels "
                          "was first imported"}
    x = make_inputs(shape["b"], shape["h"], shape["g"], shape["t"], shape["d"], torch.float32,
                    torch.device("cpu"), seed)
    start = time.perf_counter()
    got = _fwd_bwd(lambda q, k, v: flash_attention(q, k, v, causal=True), x)
    seconds = time.perf_counter() - start
    want = _fwd_bwd(lambda q, k, v: eager_attention(q, k, v, None, causal=True), x)
    errors = {name: (a - b).abs().max().item() for name, a, b in zip(("out", "dq", "dk", "dv"), got, want)}
    return {**info, "status": "ok", "interpreter_seconds": seconds, "max_abs_err_vs_eager": errors,
            "passed": max(errors.values()) <= SMOKE_TOL}


def _fwd_bwd(fn, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    out = fn(x["q"], x["k"], x["v"])
    return (out.detach(), *torch.autograd.grad(out, (x["q"], x["k"], x["v"]), x["do"]))


def triton_accuracy(inputs: dict[str, torch.Tensor], causal: bool) -> float | None:
    """GPU: largest |triton - sdpa| of the forward output on the benchmark's own inputs."""
    try:
        with torch.no_grad():
            got = _triton(inputs["q"], inputs["k"], inputs["v"], causal)
            want = _sdpa()(inputs["q"], inputs["k"], inputs["v"], causal)
    except (RuntimeError, ValueError, TypeError, ImportError):
        return None
    return (got.float() - want.float()).abs().max().item()


# ---------------------------------------------------------------- running the table


def run_table(settings: dict, backends: tuple[str, ...], device: torch.device, seed: int) -> list[dict]:
    impls = implementations()
    dtype = getattr(torch, settings["dtype"])
    shapes = [(d, ratio, t) for d in (64, 128) for ratio in (1, GQA_RATIO) for t in settings["seq_lens"]]
    if settings["model_dim"] // 128 < GQA_RATIO:
        raise ValueError(f"model_dim must give at least {GQA_RATIO} heads of dim 128 for GQA {GQA_RATIO}:1, "
                         f"got model_dim={settings['model_dim']}")
    rows = []
    with tqdm(total=len(shapes) * 2 * len(PASSES) * len(backends), desc="attention bench") as bar:
        for i, (d, ratio, t) in enumerate(shapes):
            h = settings["model_dim"] // d
            b = max(settings["tokens"] // t, 1)
            inputs = make_inputs(b, h, h // ratio, t, d, dtype, device, seed + i)
            for causal in (True, False):
                accuracy = triton_accuracy(inputs, causal) if "triton" in backends else None
                for pass_ in PASSES:
                    for backend in backends:
                        case = Case(pass_, backend, d, causal, h, h // ratio, t, b)
                        row = measure(case, impls[backend], inputs, device, settings["warmup"], settings["repeats"])
                        if backend == "triton" and accuracy is not None:
                            row["max_abs_err_vs_sdpa"] = accuracy
                        rows.append(row)
                        bar.update()
            del inputs
    return rows


# ---------------------------------------------------------------- the figure


def plot(report: dict, path: Path) -> None:
    # A bare Figure draws with Agg without touching pyplot's global backend (safe in notebooks).
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    rows = report["results"]
    panels = [(p, att) for p in PASSES for att in ("MHA", f"GQA {GQA_RATIO}:1")]
    columns = [(d, c) for d in (64, 128) for c in (True, False)]
    fig = Figure(figsize=(4.2 * len(columns), 3.2 * len(panels)))
    axes = fig.subplots(len(panels), len(columns), sharex=True, squeeze=False)
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    seq_lens = sorted({r["seq_len"] for r in rows})
    for (i, (pass_, att)), (j, (d, causal)) in ((a, b) for a in enumerate(panels) for b in enumerate(columns)):
        ax = axes[i][j]
        for backend in backends:
            pts = sorted((r["seq_len"], r["tflops"]) for r in rows if r["status"] == "ok" and r["backend"] == backend
                         and r["pass"] == pass_ and r["attention"] == att and r["head_dim"] == d
                         and r["causal"] == causal)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=backend)
        ax.set_xscale("log", base=2)
        ax.set_xticks(seq_lens, [_short(t) for t in seq_lens])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"{pass_.replace('_', '+')}, {att}, d={d}, {'causal' if causal else 'non-causal'}", fontsize=9)
        if j == 0:
            ax.set_ylabel("TFLOP/s")
        if i == len(panels) - 1:
            ax.set_xlabel("sequence length")
    axes[0][0].legend(fontsize=8)
    s = report["settings"]
    fig.suptitle(f"Attention on {report['device']} ({s['dtype']}, {s['tokens']} tokens per batch, "
                 f"model dim {s['model_dim']}), {report['date'][:10]}", fontsize=12)
    note = _smoke_note(report.get("triton_smoke"))
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=9,
                 bbox=dict(facecolor="lightyellow", edgecolor="gray"))
    # Fixed margins: tight_layout costs seconds on 16 panels and the layout never changes.
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.09 if note else 0.05, hspace=0.3, wspace=0.22)
    fig.savefig(path, dpi=80)


def _short(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _smoke_note(smoke: dict | None) -> str | None:
    if smoke is None:
        return None
    if smoke["status"] != "ok":
        return f"Triton kernel: not run on this machine ({smoke['reason']})"
    verdict = "PASSED" if smoke["passed"] else "FAILED"
    return (f"Triton kernel (not plotted): correctness smoke run through the interpreter at "
            f"{' '.join(f'{k}={v}' for k, v in smoke['shape'].items())}, t=s, causal, "
            f"forward+backward vs eager: {verdict}, max |err| = {max(smoke['max_abs_err_vs_eager'].values()):.1e}. "
            f"Not a speed figure.")


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="minillama bench attention", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring of minillama.bench.attention for the "
                                            "FLOP accounting and the list of implementations.")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where to run (auto: cuda if available)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="directory for the json and png")
    parser.add_argument("--quick", action="store_true", help="CPU only: tiny sizes, one repeat (for tests)")
    parser.add_argument("--seq-lens", type=int, nargs="+", help="override the sequence lengths")
    parser.add_argument("--tokens", type=int, help="override the tokens per batch (batch = tokens // seq_len)")
    parser.add_argument("--repeats", type=int, help="override the timed repeats per case (median reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    if args.quick and args.device == "cuda":
        parser.error("--quick is the CPU test mode; allowed with --device cpu only")
    for name in ("tokens", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    if args.seq_lens is not None and min(args.seq_lens) < 1:
        parser.error(f"--seq-lens must all be >= 1, got {args.seq_lens}")
    return args


def settings_for(args: argparse.Namespace) -> dict:
    base = GPU_SETTINGS if args.device == "cuda" else CPU_QUICK if args.quick else CPU_SETTINGS
    settings = dict(base)
    if args.seq_lens:
        settings["seq_lens"] = tuple(args.seq_lens)
    if args.tokens:
        settings["tokens"] = args.tokens
    if args.repeats:
        settings["repeats"] = args.repeats
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = args.device == "cpu"
    if cpu:  # must precede the first import of minillama.kernels (the smoke run)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    device = torch.device(args.device)
    settings = settings_for(args)
    load_before = load_average()
    rows = run_table(settings, CPU_BACKENDS if cpu else GPU_BACKENDS, device, args.seed)
    add_ratios(rows)
    load_after = load_average()
    report = {
        "benchmark": "attention",
        "device": f"CPU ({device_name(device)}, {torch.get_num_threads()} threads)" if cpu else device_name(device),
        "versions": versions("triton"),
        "date": utc_now(),
        "settings": {**settings, "gqa_ratio": GQA_RATIO, "quick": args.quick, "seed": args.seed,
                     "flops": "forward 4*b*h*t*s*d (x0.5 causal); forward+backward 3.5x forward",
                     "peak_extra_mib": "CUDA peak allocation during one call beyond the resident inputs"},
        # Other processes competing for the cores slow every backend unevenly; this says how busy
        # the machine was when the table was taken.
        "host_load_average_1min_at_start": load_before,
        "host_load_average_1min_at_end": load_after,
        "busy_warning": busy_warning(device.type, available_cpus(), (load_before, load_after)),
        "results": rows,
        "summary_geomean_vs_sdpa": summarize(rows),
    }
    if cpu:
        report["triton_smoke"] = triton_smoke(SMOKE_QUICK if args.quick else SMOKE_SHAPE, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"attention_{device_slug(device)}"
    save_json(stem.with_suffix(".json"), report)
    plot(report, stem.with_suffix(".png"))
    if report["busy_warning"]:
        print(f"WARNING: {report['busy_warning']}")
    print(f"wrote {stem}.json and {stem}.png")
    smoke = report.get("triton_smoke")
    return 1 if smoke and smoke["status"] == "ok" and not smoke["passed"] else 0
