"""Model throughput: minillama against transformers' LlamaForCausalLM on the same weights.

One run measures, per preset, on one machine and one batch:

* training tokens/s (forward + backward + AdamW step) for minillama with ``eager`` and ``sdpa``
  attention and for transformers with ``sdpa`` attention (fp32 on a CPU, bf16 autocast on CUDA);
* cached decoding tokens/s: :func:`minillama.generate.generate` against transformers' ``generate``,
  greedy, same prompts and number of new tokens, checked to emit the same tokens;
* the time to decode one token against the context length, with the KV cache (read through
  :func:`minillama.generate.stacked_projections`, as ``generate`` reads it) and without it.

Calls are timed in turns by :mod:`minillama.bench.harness`. It writes ``model_<device>.json``
(machine, versions, settings, every figure and the minillama/transformers ratios of this run) and
``model_<device>.png`` into ``--out-dir`` (default ``benchmarks/``), and prints a markdown table.
``make bench`` runs it with the defaults.

Usage::

    minillama bench model                            # tiny and small, written to benchmarks/
    python -m minillama.bench model --quick --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..config import LlamaConfig
from ..fileio import atomic_write, save_json
from ..generate import generate, stacked_projections
from ..hf import to_hf
from ..model import Llama
from ..sequences import causal_lm_loss
from .harness import available_cpus, busy_warning, device_slug, interleaved_times, load_average, machine_info
from .harness import median_ms, summarize

TRAIN_IMPLS = ("minillama-eager", "minillama-sdpa", "transformers-sdpa")
DECODE_IMPLS = ("minillama", "transformers")
CONTEXT_SERIES = ("minillama-cache", "transformers-cache", "minillama-no-cache", "transformers-no-cache")
COLORS = {"minillama-eager": "tab:green", "minillama-sdpa": "tab:blue", "minillama": "tab:blue",
          "transformers-sdpa": "tab:orange", "transformers": "tab:orange"}

# (batch, sequence) of a training step. A CPU gets a smaller step for the 125M-parameter preset
# so that the whole benchmark stays within minutes.
TRAIN_SHAPES = {
    ("cpu", "tiny"): (8, 256),
    ("cpu", "small"): (2, 256),
    ("cuda", "tiny"): (32, 256),
    ("cuda", "small"): (8, 1024),
}

# Settings of --quick: the tiny preset with a few short steps (used by the tests).
QUICK = dict(presets=["tiny"], train_batch=4, train_seq=64, warmup=2, steps=3, repeats=2,
             new_tokens=8, context_steps=2, max_context=64)


# ---------------------------------------------------------------------------- memory
def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- models
def build_models(preset: str, device: torch.device, seed: int) -> tuple[Llama, torch.nn.Module]:
    """A seeded minillama model and a transformers copy with the same weights (sdpa attention)."""
    model = Llama(LlamaConfig.from_preset(preset), seed=seed).to(device)
    hf_model = to_hf(model)
    hf_model.set_attn_implementation("sdpa")
    return model, hf_model


def minillama_loss(model: Llama, ids: torch.Tensor) -> torch.Tensor:
    return causal_lm_loss(model(ids), ids)


def transformers_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


# ---------------------------------------------------------------------------- training
def train_step_fn(model: torch.nn.Module, loss_fn: Callable, ids: torch.Tensor,
                  device: torch.device) -> Callable[[], float]:
    """One forward + backward + AdamW step on ``ids (b, t)``; bf16 autocast on CUDA."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def step() -> float:
        with autocast:
            loss = loss_fn(model, ids)
        loss.backward()
        optimizer.step()
        # Freed now rather than at the next step, so three models' gradients never coexist.
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def bench_training(preset: str, batch: int, seq: int, device: torch.device, seed: int,
                   warmup: int, steps: int) -> dict[str, Any]:
    """Training tokens/s of each implementation, all starting from the same weights."""
    config = LlamaConfig.from_preset(preset)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))
    model, hf_model = build_models(preset, device, seed)
    eager = copy.deepcopy(model)
    eager.attn_backend = "eager"
    model.attn_backend = "sdpa"
    models = {"minillama-eager": (eager, minillama_loss), "minillama-sdpa": (model, minillama_loss),
              "transformers-sdpa": (hf_model, transformers_loss)}
    steps_fns = {name: train_step_fn(m.train(), loss_fn, ids.to(device), device)
                 for name, (m, loss_fn) in models.items()}
    # The first step is a warm-up too; its losses show that the three start from the same weights.
    first_loss = {name: step() for name, step in steps_fns.items()}
    times = interleaved_times(steps_fns, max(warmup - 1, 0), steps, device)
    results = {name: dict(first_loss=first_loss[name], **summarize(times[name], batch * seq))
               for name in TRAIN_IMPLS}
    del models, steps_fns, model, eager, hf_model
    free_memory(device)
    return dict(batch=batch, seq_len=seq, tokens_per_step=batch * seq,
                dtype="bfloat16 autocast" if device.type == "cuda" else "float32",
                optimizer="AdamW(lr=1e-4, weight_decay=0.1)", warmup_steps=warmup, timed_steps=steps,
                results=results, ratios=training_ratios(results))


def training_ratios(results: dict[str, Any]) -> dict[str, float]:
    base = results["transformers-sdpa"]["tokens_per_s"]
    return {f"{impl} / transformers-sdpa": results[impl]["tokens_per_s"] / base
            for impl in ("minillama-eager", "minillama-sdpa")}


# ---------------------------------------------------------------------------- decoding
def hf_generation_config(new_tokens: int):
    from transformers import GenerationConfig

    # No end-of-sequence token: both sides must emit exactly new_tokens tokens.
    return GenerationConfig(max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                            eos_token_id=None, bos_token_id=None, pad_token_id=0)


def bench_decode(model: Llama, hf_model: torch.nn.Module, batch: int, prompt_len: int, new_tokens: int,
                 device: torch.device, seed: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Greedy cached decoding of ``new_tokens`` after a ``(batch, prompt_len)`` prompt, prefill
    included; tokens/s counts the generated tokens of the whole batch."""
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_len),
                            generator=torch.Generator().manual_seed(seed + batch)).to(device)
    mask = torch.ones_like(prompts)
    gen_config = hf_generation_config(new_tokens)
    outputs: dict[str, torch.Tensor] = {}
    runs = {
        "minillama": lambda: outputs.__setitem__(
            "minillama", generate(model, prompts, new_tokens, use_cache=True)),
        "transformers": lambda: outputs.__setitem__(
            "transformers", hf_model.generate(prompts, attention_mask=mask, generation_config=gen_config)),
    }
    # Called as a user would call them: each library's generate sets its own grad mode.
    times = interleaved_times(runs, warmup, repeats, device)
    results = {name: summarize(times[name], batch * new_tokens) for name in DECODE_IMPLS}
    ours, theirs = outputs["minillama"], outputs["transformers"]
    assert ours.shape == theirs.shape == (batch, prompt_len + new_tokens), (ours.shape, theirs.shape)
    match = torch.equal(ours, theirs)
    assert match, (f"greedy tokens differ between minillama and transformers (batch {batch}): "
                   f"first mismatch at {(ours != theirs).nonzero()[0].tolist()}")
    return dict(batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, dtype=str(model.dtype),
                results=results, tokens_match=match,
                ratio=results["minillama"]["tokens_per_s"] / results["transformers"]["tokens_per_s"])


# ---------------------------------------------------------------------------- context length
def context_lengths(max_seq_len: int, steps: int, max_context: int | None) -> list[int]:
    """16, 32, 64, ... up to the longest context that leaves room for a warm-up step and
    ``steps`` timed steps."""
    longest = max_seq_len - steps - 1
    if max_context is not None:
        longest = min(longest, max_context)
    lengths, n = [], 16
    while n < longest:
        lengths.append(n)
        n *= 2
    return lengths + [longest]


def minillama_decode_step(model: Llama, ids: torch.Tensor, context: int, n_steps: int) -> Callable[[], Any]:
    """Prefill ``context`` tokens of ``ids (b, s)`` into a new cache; each call of the returned
    function then decodes the next token. Call it inside ``stacked_projections(model)`` to
    decode as :func:`minillama.generate.generate` does (the prefill here runs without, as there)."""
    cache = model.new_cache(ids.shape[0], context + n_steps)
    model(ids[:, :context], cache=cache)
    tokens = iter(ids[:, context:context + n_steps].split(1, dim=1))
    return lambda: model(next(tokens), cache=cache)


def transformers_decode_step(hf_model: torch.nn.Module, ids: torch.Tensor, context: int,
                             n_steps: int) -> Callable[[], Any]:
    """As :func:`minillama_decode_step`, on transformers' own cache."""
    cache = hf_model(input_ids=ids[:, :context], use_cache=True).past_key_values
    tokens = iter(ids[:, context:context + n_steps].split(1, dim=1))
    return lambda: hf_model(input_ids=next(tokens), past_key_values=cache, use_cache=True)


def bench_context(model: Llama, hf_model: torch.nn.Module, device: torch.device, seed: int,
                  steps: int, max_context: int | None) -> dict[str, Any]:
    """Median time to decode one token (batch 1) after ``context`` tokens, with and without a
    KV cache. Without one, each new token runs the whole context through the model again.

    Each pair minillama/transformers is timed in turns. The cached pair runs inside
    :func:`stacked_projections`, entered once per context length as ``generate`` enters it once
    after the prompt; the no-cache pair runs after it, on the plain layers, as
    ``generate(use_cache=False)`` does (interleaved with the cached calls, it would run stacked too)."""
    config = model.config
    lengths = context_lengths(config.max_seq_len, steps, max_context)
    ids = torch.randint(0, config.vocab_size, (1, config.max_seq_len),
                        generator=torch.Generator().manual_seed(seed)).to(device)
    ms: dict[str, list[float]] = {name: [] for name in CONTEXT_SERIES}
    with torch.no_grad():  # the grad mode both libraries' generate use
        for n in tqdm(lengths, desc="context sweep", leave=False):
            cached = {
                "minillama-cache": minillama_decode_step(model, ids, n, steps + 1),
                "transformers-cache": transformers_decode_step(hf_model, ids, n, steps + 1),
            }
            with stacked_projections(model):
                times = interleaved_times(cached, 1, steps, device)
            times |= interleaved_times({
                "minillama-no-cache": lambda: model(ids[:, :n + 1]),
                "transformers-no-cache": lambda: hf_model(input_ids=ids[:, :n + 1], use_cache=False),
            }, 1, steps, device)
            for name in CONTEXT_SERIES:
                ms[name].append(median_ms(times[name]))
    return dict(batch=1, steps_per_point=steps, context_lengths=lengths, ms_per_token=ms,
                cache_growth=ms["minillama-cache"][-1] / ms["minillama-cache"][0])


# ---------------------------------------------------------------------------- one preset
def bench_preset(preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config = LlamaConfig.from_preset(preset)
    batch, seq = TRAIN_SHAPES[(device.type, preset)]
    batch, seq = args.train_batch or batch, min(args.train_seq or seq, config.max_seq_len)
    out: dict[str, Any] = dict(config=config.to_dict(), num_parameters=config.num_parameters())
    out["training"] = bench_training(preset, batch, seq, device, args.seed, args.warmup, args.steps)
    out["training"]["shape_source"] = (
        "--train-batch/--train-seq/--quick" if args.train_batch or args.train_seq
        else f"default for {device.type}/{preset}" + (" (reduced from max_seq_len so that a CPU run takes "
                                                       "minutes)" if seq < config.max_seq_len else ""))
    model, hf_model = build_models(preset, device, args.seed)
    model.eval()
    out["decode"] = {f"batch_{b}": bench_decode(model, hf_model, b, args.prompt_len, args.new_tokens, device,
                                                args.seed, args.warmup, args.repeats)
                     for b in args.decode_batches}
    out["context"] = bench_context(model, hf_model, device, args.seed, args.context_steps, args.max_context)
    del model, hf_model
    free_memory(device)
    return out


# ---------------------------------------------------------------------------- report
def targets(presets: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, read off this run's figures."""
    found = {}
    for preset, res in presets.items():
        ratio = res["training"]["ratios"]["minillama-sdpa / transformers-sdpa"]
        found[f"{preset}: training minillama-sdpa / transformers-sdpa >= 1.0"] = dict(ratio=ratio, met=ratio >= 1.0)
    if "tiny" in presets:
        for key, dec in presets["tiny"]["decode"].items():
            found[f"tiny: cached decode {key} minillama / transformers >= 1.5"] = dict(
                ratio=dec["ratio"], met=dec["ratio"] >= 1.5)
    return found


def markdown_table(report: dict[str, Any]) -> str:
    rows = ["| preset | measurement | minillama eager | minillama sdpa | transformers sdpa | minillama / transformers |",
            "|---|---|---:|---:|---:|---:|"]
    for preset, res in report["presets"].items():
        train = res["training"]
        r = train["results"]
        rows.append(f"| {preset} | training tokens/s (b={train['batch']}, t={train['seq_len']}) "
                    f"| {r['minillama-eager']['tokens_per_s']:,.0f} | {r['minillama-sdpa']['tokens_per_s']:,.0f} "
                    f"| {r['transformers-sdpa']['tokens_per_s']:,.0f} "
                    f"| {train['ratios']['minillama-sdpa / transformers-sdpa']:.2f} (sdpa) |")
        for dec in res["decode"].values():
            d = dec["results"]
            rows.append(f"| {preset} | cached decode tokens/s (b={dec['batch']}, {dec['new_tokens']} new) "
                        f"| | {d['minillama']['tokens_per_s']:,.0f} | {d['transformers']['tokens_per_s']:,.0f} "
                        f"| {dec['ratio']:.2f} |")
        ctx = res["context"]
        ms = ctx["ms_per_token"]
        for i in (0, -1):
            rows.append(f"| {preset} | ms/token at context {ctx['context_lengths'][i]} (cache / no cache) "
                        f"| | {ms['minillama-cache'][i]:.2f} / {ms['minillama-no-cache'][i]:.2f} "
                        f"| {ms['transformers-cache'][i]:.2f} / {ms['transformers-no-cache'][i]:.2f} "
                        f"| {ms['transformers-cache'][i] / ms['minillama-cache'][i]:.2f} (cache) |")
    return "\n".join(rows)


def plot(report: dict[str, Any], path: Path) -> None:
    """One column per preset: training tokens/s, decoding tokens/s, time per token vs context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = report["presets"]
    fig, axes = plt.subplots(3, len(presets), figsize=(6 * len(presets), 12), squeeze=False)
    for col, (preset, res) in enumerate(presets.items()):
        train = res["training"]
        bar_chart(axes[0][col], {"": {k: v["tokens_per_s"] for k, v in train["results"].items()}},
                  f"{preset}: training tokens/s (b={train['batch']}, t={train['seq_len']}, fwd+bwd+AdamW)")
        bar_chart(axes[1][col], {f"batch {d['batch']}": {k: v["tokens_per_s"] for k, v in d["results"].items()}
                                 for d in res["decode"].values()},
                  f"{preset}: cached greedy decoding tokens/s ({next(iter(res['decode'].values()))['new_tokens']} new)")
        context_chart(axes[2][col], res["context"], preset)
    info = report["machine"]
    fig.suptitle(f"minillama vs transformers {info['transformers']}, torch {info['torch']}, "
                 f"{info['device_name']}, {info['torch_threads']} threads", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def bar_chart(ax, groups: dict[str, dict[str, float]], title: str) -> None:
    """Grouped bars: one group per key of ``groups``, one bar per implementation."""
    series = list(next(iter(groups.values())))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [groups[g][name] for g in groups], width, label=name, color=COLORS[name])
        ax.bar_label(bars, fmt="{:,.0f}", fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel("tokens/s")
    ax.margins(y=0.25)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncol=len(series))


def context_chart(ax, ctx: dict[str, Any], preset: str) -> None:
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    for name in CONTEXT_SERIES:
        impl, _, cached = name.partition("-")
        ax.plot(ctx["context_lengths"], ctx["ms_per_token"][name], marker="o", color=COLORS[impl],
                linestyle="-" if cached == "cache" else "--", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ctx["context_lengths"], [str(n) for n in ctx["context_lengths"]])
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("ms per decoded token (batch 1, log scale)")
    ax.set_title(f"{preset}: time per token against context (solid: KV cache)", fontsize=9)
    ax.legend(fontsize=8)


# ---------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="minillama bench model",
        description=__doc__.split("\n\n")[0] + " Writes model_<device>.json/png and prints a markdown table.")
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=["tiny", "small"],
                        help="presets to measure (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"], help="where to run (default: cuda if there is one)")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="torch.set_num_threads (default: the CPUs this process may use, %(default)s here)")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="training batch for every preset (default: per device and preset, see TRAIN_SHAPES)")
    parser.add_argument("--train-seq", type=int, default=None,
                        help="training sequence length (default per device and preset, capped at max_seq_len)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=7,
                        help="timed training steps; the median is reported (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed generate calls per implementation and batch (default: %(default)s)")
    parser.add_argument("--decode-batches", type=int, nargs="+", default=[1, 8], help="decoding batch sizes (default: %(default)s)")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens before decoding (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per prompt (default: %(default)s)")
    parser.add_argument("--context-steps", type=int, default=5,
                        help="timed one-token steps per point of the context sweep (default: %(default)s)")
    parser.add_argument("--max-context", type=int, default=None,
                        help="longest context of the sweep (default: the preset's max_seq_len)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the token ids (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks"),
                        help="where model_<device>.json and .png go (default: %(default)s/, beside the results "
                             "the chapters show)")
    parser.add_argument("--note", default="", help="free text stored in the json (e.g. what else ran)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: the tiny preset, few and short steps (see QUICK)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for name in ("threads", "warmup", "steps", "repeats", "prompt_len", "new_tokens", "context_steps",
                 "train_batch", "train_seq", "max_context"):
        value, least = getattr(args, name), 0 if name == "warmup" else 1
        if value is not None and value < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    if any(b < 1 for b in args.decode_batches):
        parser.error(f"--decode-batches must all be >= 1, got {args.decode_batches}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    settings = {k: v for k, v in vars(args).items() if k != "out_dir"}
    machine = machine_info(device, "transformers")
    report: dict[str, Any] = dict(machine=machine, settings=settings, presets={})
    for preset in tqdm(args.presets, desc="presets"):
        report["presets"][preset] = bench_preset(preset, args, device)
    report["targets"] = targets(report["presets"])
    machine["load_average_end"] = load_average()
    machine["busy_warning"] = busy_warning(machine["device"], machine["cpu_count"],
                                           (machine["load_average_start"], machine["load_average_end"]))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / f"model_{device_slug(device)}.json"
    save_json(json_path, report)
    plot(report, json_path.with_suffix(".png"))
    print(markdown_table(report))
    print("\n".join(f"target {name}: ratio {t['ratio']:.2f} {'met' if t['met'] else 'MISSED'}"
                    for name, t in report["targets"].items()))
    if report["machine"]["busy_warning"]:
        print(f"WARNING: {report['machine']['busy_warning']}")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0
