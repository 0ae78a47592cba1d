"""Model throughput: minillama against transformers' LlamaForCausalLM on the same weights.

One run measures, per preset, on one machine, each pair side by side at the same precision:

* training tokens/s (forward + backward + AdamW step), each library eager and compiled
  (``torch.compile``), in float32 and, where the device multiplies bf16 natively (see
  :mod:`minillama.precision`), under bf16 autocast; sdpa attention on both sides;
* cached decoding tokens/s at batch 1 and 8: :func:`minillama.generate.generate` eager and compiled
  against transformers' ``generate`` with its dynamic and its static cache, greedy, checked to emit
  the same tokens;
* K-sample throughput: ``--k-prompts`` prompts of mixed lengths answered ``--k`` times each,
  through the path before issue 18 (each sample runs its prompt itself, eager steps) and through
  today's (each prompt runs once and its cache is copied K times; compiled steps);
* the time to decode one token against the context length, with the KV cache and without it.

Calls are timed in turns by :mod:`minillama.bench.harness`. It writes ``model_<device>.json``
(machine, versions, settings, every figure and the ratios of this run) and ``model_<device>.png``
into ``--out-dir`` (default ``benchmarks/``), and prints a markdown table. ``make bench`` runs it
with the defaults.

Usage::

    minillama bench model                            # tiny and small, written to benchmarks/
    python -m minillama.bench model --quick --out-dir /tmp/bench
"""
from __future__ import annotations

import argparse
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
from ..precision import autocast, native_bf16
from ..sequences import causal_lm_loss, pad_rows
from .harness import available_cpus, busy_warning, device_slug, interleaved_times, load_average, machine_info
from .harness import time_call
from .harness import median_ms, summarize

LIBRARIES = ("minillama", "transformers")
MODES = ("eager", "compiled")
TRAIN_IMPLS = tuple(f"{lib}-{mode}" for lib in LIBRARIES for mode in MODES)
DECODE_IMPLS = ("minillama-eager", "minillama-compiled", "transformers-dynamic", "transformers-static")
K_IMPLS = ("per-sample prefill, eager", "prefill once, eager", "prefill once, compiled")
CONTEXT_SERIES = ("minillama-cache", "transformers-cache", "minillama-no-cache", "transformers-no-cache")
COLORS = {"minillama-eager": "tab:cyan", "minillama-compiled": "tab:blue", "minillama": "tab:blue",
          "transformers-eager": "tab:orange", "transformers-compiled": "tab:red", "transformers": "tab:orange",
          "transformers-dynamic": "tab:orange", "transformers-static": "tab:red",
          "per-sample prefill, eager": "tab:gray", "prefill once, eager": "tab:cyan", "prefill once, compiled": "tab:blue"}

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
             new_tokens=8, context_steps=2, max_context=64, k_prompts=8, k=4)


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
def train_step_fn(model: torch.nn.Module, loss_fn: Callable, ids: torch.Tensor, device: torch.device,
                  precision: str, compiled: bool) -> Callable[[], float]:
    """One forward + backward + AdamW step on ``ids (b, t)`` under ``precision``; the forward
    compiled with ``compiled`` (the first call then pays the compilation)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    forward = torch.compile(model) if compiled else model

    def step() -> float:
        with autocast(precision, device):
            loss = loss_fn(forward, ids)
        loss.backward()
        optimizer.step()
        # Freed now rather than at the next step, so the models' gradients never coexist.
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def bench_training(preset: str, batch: int, seq: int, device: torch.device, seed: int, warmup: int, steps: int,
                   precision: str) -> dict[str, Any]:
    """Training tokens/s of each library, eager and compiled, all from the same weights, at ``precision``."""
    config = LlamaConfig.from_preset(preset)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed)).to(device)
    models = {}
    for mode in MODES:
        model, hf_model = build_models(preset, device, seed)
        models[f"minillama-{mode}"] = (model, minillama_loss)
        models[f"transformers-{mode}"] = (hf_model, transformers_loss)
    steps_fns = {name: train_step_fn(m.train(), loss_fn, ids, device, precision, name.endswith("compiled"))
                 for name, (m, loss_fn) in models.items()}
    # The first step is a warm-up too (and the compilation); its losses show that all start from the same weights.
    first_loss, first_s = {}, {}
    for name, step in steps_fns.items():
        first_s[name] = time_call(lambda: first_loss.__setitem__(name, step()), device)
    times = interleaved_times(steps_fns, max(warmup - 1, 0), steps, device)
    results = {name: dict(first_loss=first_loss[name], first_call_s=first_s[name],
                          **summarize(times[name], batch * seq)) for name in TRAIN_IMPLS}
    del models, steps_fns
    free_memory(device)
    return dict(batch=batch, seq_len=seq, tokens_per_step=batch * seq, precision=precision,
                dtype="bfloat16 autocast" if precision == "bf16" else "float32", attention="sdpa",
                optimizer="AdamW(lr=1e-4, weight_decay=0.1)", warmup_steps=warmup, timed_steps=steps,
                results=results, ratios=training_ratios(results))


def training_ratios(results: dict[str, Any]) -> dict[str, float]:
    tps = {name: r["tokens_per_s"] for name, r in results.items()}
    return {"minillama-compiled / transformers-eager": tps["minillama-compiled"] / tps["transformers-eager"],
            "minillama-compiled / transformers-compiled": tps["minillama-compiled"] / tps["transformers-compiled"],
            "minillama-eager / transformers-eager": tps["minillama-eager"] / tps["transformers-eager"]}


def training_precisions(device: torch.device, choice: str) -> tuple[list[str], str | None]:
    """The precisions to measure (``--bf16``: ``auto``, ``always`` or ``never``) and why bf16 is left out."""
    if choice == "never":
        return ["fp32"], "--bf16 never"
    if choice == "auto" and not native_bf16(device):
        return ["fp32"], (f"this {device.type} has no native bf16 (a bf16 matmul is emulated, tens of times slower "
                          f"than float32); --bf16 always measures it anyway")
    return ["fp32", "bf16"], None


# ---------------------------------------------------------------------------- decoding
def hf_generation_config(new_tokens: int, cache: str):
    from transformers import GenerationConfig

    # No end-of-sequence token: both sides must emit exactly new_tokens tokens.
    return GenerationConfig(max_new_tokens=new_tokens, do_sample=False, use_cache=True, eos_token_id=None,
                            bos_token_id=None, pad_token_id=0, cache_implementation="static" if cache == "static" else None)


def bench_decode(model: Llama, hf_model: torch.nn.Module, batch: int, prompt_len: int, new_tokens: int,
                 device: torch.device, seed: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Greedy cached decoding of ``new_tokens`` after a ``(batch, prompt_len)`` prompt, prefill
    included; tokens/s counts the generated tokens of the whole batch. The compiled side's
    compilation is paid before the timing (its seconds are recorded)."""
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_len),
                            generator=torch.Generator().manual_seed(seed + batch)).to(device)
    mask = torch.ones_like(prompts)
    outputs: dict[str, torch.Tensor] = {}

    def ours(compiled: bool) -> Callable[[], Any]:
        name = "minillama-compiled" if compiled else "minillama-eager"
        return lambda: outputs.__setitem__(name, generate(model, prompts, new_tokens, compile=compiled))

    def theirs(cache: str) -> Callable[[], Any]:
        config = hf_generation_config(new_tokens, cache)
        return lambda: outputs.__setitem__(f"transformers-{cache}", hf_model.generate(
            prompts, attention_mask=mask, generation_config=config))

    runs = {"minillama-eager": ours(False), "minillama-compiled": ours(True),
            "transformers-dynamic": theirs("dynamic"), "transformers-static": theirs("static")}
    first_s = {name: time_call(run, device) for name, run in runs.items()}
    # Called as a user would call them: each library's generate sets its own grad mode.
    times = interleaved_times(runs, max(warmup - 1, 0), repeats, device)
    results = {name: dict(first_call_s=first_s[name], **summarize(times[name], batch * new_tokens))
               for name in DECODE_IMPLS}
    reference = outputs["transformers-dynamic"]
    for name, out in outputs.items():
        assert out.shape == reference.shape == (batch, prompt_len + new_tokens), (name, out.shape)
        assert torch.equal(out, reference), (f"greedy tokens differ between {name} and transformers (batch {batch}): "
                                             f"first mismatch at {(out != reference).nonzero()[0].tolist()}")
    tps = {name: r["tokens_per_s"] for name, r in results.items()}
    best_theirs = max(tps["transformers-dynamic"], tps["transformers-static"])
    return dict(batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, dtype=str(model.dtype),
                results=results, tokens_match=True,
                ratios={"minillama-compiled / best transformers": tps["minillama-compiled"] / best_theirs,
                        "minillama-eager / best transformers": tps["minillama-eager"] / best_theirs,
                        "minillama-compiled / transformers-dynamic": tps["minillama-compiled"] / tps["transformers-dynamic"],
                        "minillama-compiled / transformers-static": tps["minillama-compiled"] / tps["transformers-static"]})


# ---------------------------------------------------------------------------- K samples per prompt
def bench_k_samples(model: Llama, n_prompts: int, k: int, new_tokens: int, rows: int, device: torch.device,
                    seed: int, repeats: int) -> dict[str, Any]:
    """``n_prompts`` left-padded prompts of 24 to 96 tokens, ``k`` samples each (temperature 1, each
    row's own uniforms), ``rows`` rows decoded together, three ways (:data:`K_IMPLS`). Every way
    draws each sample from the same uniforms, so the tokens must agree (up to round-off)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(24, 97, (n_prompts,), generator=gen).sort().values.tolist()  # sorted, as the samplers do
    prompts = [torch.randint(4, model.config.vocab_size, (n,), generator=gen).tolist() for n in lengths]
    uniforms = torch.rand(n_prompts * k, new_tokens, generator=gen, dtype=torch.float64)
    per_batch = max(1, rows // k)
    outputs: dict[str, list[torch.Tensor]] = {}

    def run(name: str, num_samples: int, compiled: bool) -> Callable[[], Any]:
        def sample() -> None:
            outs = []
            for first in range(0, n_prompts, per_batch):
                group = prompts[first:first + per_batch]
                ids, mask = pad_rows(group, 0, left=True)
                ids, mask = ids.to(device), mask.to(device)
                u = uniforms[first * k:(first + len(group)) * k]
                if num_samples == 1:  # every sample runs its prompt itself
                    ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
                out = generate(model, ids, new_tokens, temperature=1.0, attention_mask=mask, uniforms=u,
                               num_samples=num_samples, compile=compiled)
                outs.append(out[:, ids.shape[1]:])
            outputs[name] = outs
        return sample

    runs = {K_IMPLS[0]: run(K_IMPLS[0], 1, False), K_IMPLS[1]: run(K_IMPLS[1], k, False),
            K_IMPLS[2]: run(K_IMPLS[2], k, True)}
    first_s = {name: time_call(fn, device) for name, fn in runs.items()}
    times = interleaved_times(runs, 0, repeats, device)
    results = {name: dict(first_call_s=first_s[name], **summarize(times[name], n_prompts * k * new_tokens))
               for name in K_IMPLS}
    reference = torch.cat([o.cpu() for o in outputs[K_IMPLS[0]]])
    agree = {name: float((torch.cat([o.cpu() for o in outs]) == reference).all(-1).float().mean())
             for name, outs in outputs.items()}
    base = results[K_IMPLS[0]]["tokens_per_s"]
    return dict(prompts=n_prompts, k=k, new_tokens=new_tokens, rows_per_batch=per_batch * k,
                prompt_lengths=[min(lengths), max(lengths)], results=results, samples_identical=agree,
                ratios={f"{name} / {K_IMPLS[0]}": results[name]["tokens_per_s"] / base for name in K_IMPLS[1:]})


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
    precisions, skipped = training_precisions(device, args.bf16)
    out["training"] = {p: bench_training(preset, batch, seq, device, args.seed, args.warmup, args.steps, p)
                       for p in tqdm(precisions, desc="training", leave=False)}
    out["training_bf16_skipped"] = skipped
    out["training_shape_source"] = (
        "--train-batch/--train-seq/--quick" if args.train_batch or args.train_seq
        else f"default for {device.type}/{preset}" + (" (reduced from max_seq_len so that a CPU run takes "
                                                       "minutes)" if seq < config.max_seq_len else ""))
    model, hf_model = build_models(preset, device, args.seed)
    model.eval()
    out["decode"] = {f"batch_{b}": bench_decode(model, hf_model, b, args.prompt_len, args.new_tokens, device,
                                                args.seed, args.warmup, args.repeats)
                     for b in tqdm(args.decode_batches, desc="decoding", leave=False)}
    if preset == "tiny":  # the course's model; the larger preset's sampling is the GPU's business
        out["k_samples"] = bench_k_samples(model, args.k_prompts, args.k, args.new_tokens, args.k_rows, device,
                                           args.seed, max(1, args.repeats // 2))
    out["context"] = bench_context(model, hf_model, device, args.seed, args.context_steps, args.max_context)
    del model, hf_model
    free_memory(device)
    return out


# ---------------------------------------------------------------------------- report
TARGETS = {"training": ("minillama-compiled / transformers-eager", 1.5),
           "decode batch_1": ("minillama-compiled / best transformers", 3.0),
           "decode batch_8": ("minillama-compiled / best transformers", 2.0),
           "k_samples": ("prefill once, compiled / per-sample prefill, eager", 3.0)}


def targets(presets: dict[str, Any]) -> dict[str, Any]:
    """Issue 18's targets, read off this run's figures (the tiny preset: the course's model)."""
    found = {}
    for preset, res in presets.items():
        for precision, train in res["training"].items():
            name, least = TARGETS["training"]
            ratio = train["ratios"][name]
            found[f"{preset} {precision}: training {name} >= {least}"] = dict(ratio=ratio, met=ratio >= least)
    if "tiny" in presets:
        tiny = presets["tiny"]
        for key, dec in tiny["decode"].items():
            if f"decode {key}" in TARGETS:
                name, least = TARGETS[f"decode {key}"]
                found[f"tiny: cached decode {key} {name} >= {least}"] = dict(ratio=dec["ratios"][name],
                                                                             met=dec["ratios"][name] >= least)
        if "k_samples" in tiny:
            name, least = TARGETS["k_samples"]
            ratio = tiny["k_samples"]["ratios"][name]
            found[f"tiny: K-sample throughput {name} >= {least}"] = dict(ratio=ratio, met=ratio >= least)
    return found


def markdown_table(report: dict[str, Any]) -> str:
    rows = ["| preset | measurement | " + " | ".join(TRAIN_IMPLS) + " | ratios |",
            "|---|---|" + "---:|" * len(TRAIN_IMPLS) + "---|"]
    for preset, res in report["presets"].items():
        for precision, train in res["training"].items():
            r = train["results"]
            ratios = "; ".join(f"{k}: {v:.2f}" for k, v in train["ratios"].items())
            rows.append(f"| {preset} | training tokens/s, {precision} (b={train['batch']}, t={train['seq_len']}) | "
                        + " | ".join(f"{r[i]['tokens_per_s']:,.0f}" for i in TRAIN_IMPLS) + f" | {ratios} |")
    rows += ["", "| preset | measurement | " + " | ".join(DECODE_IMPLS) + " | ratios |",
             "|---|---|" + "---:|" * len(DECODE_IMPLS) + "---|"]
    for preset, res in report["presets"].items():
        for dec in res["decode"].values():
            d = dec["results"]
            ratios = "; ".join(f"{k}: {v:.2f}" for k, v in dec["ratios"].items() if k.endswith("best transformers"))
            rows.append(f"| {preset} | greedy decode tokens/s (b={dec['batch']}, {dec['new_tokens']} new) | "
                        + " | ".join(f"{d[i]['tokens_per_s']:,.0f}" for i in DECODE_IMPLS) + f" | {ratios} |")
    for preset, res in report["presets"].items():
        if "k_samples" in res:
            ks = res["k_samples"]
            rows += ["", "| preset | measurement | " + " | ".join(K_IMPLS) + " | ratios |",
                     "|---|---|" + "---:|" * len(K_IMPLS) + "---|",
                     f"| {preset} | sampled tokens/s ({ks['prompts']} prompts x K={ks['k']}, {ks['new_tokens']} new) | "
                     + " | ".join(f"{ks['results'][i]['tokens_per_s']:,.0f}" for i in K_IMPLS) + " | "
                     + "; ".join(f"{k}: {v:.2f}" for k, v in ks["ratios"].items()) + " |"]
    rows += ["", "| preset | ms/token at context (cache / no cache) | minillama | transformers |", "|---|---|---:|---:|"]
    for preset, res in report["presets"].items():
        ctx, ms = res["context"], res["context"]["ms_per_token"]
        for i in (0, -1):
            rows.append(f"| {preset} | {ctx['context_lengths'][i]} | {ms['minillama-cache'][i]:.2f} / "
                        f"{ms['minillama-no-cache'][i]:.2f} | {ms['transformers-cache'][i]:.2f} / "
                        f"{ms['transformers-no-cache'][i]:.2f} |")
    return "\n".join(rows)


def plot(report: dict[str, Any], path: Path) -> None:
    """One column per preset: training tokens/s, decoding tokens/s, K-sample throughput (tiny),
    time per token against the context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = report["presets"]
    fig, axes = plt.subplots(4, len(presets), figsize=(7 * len(presets), 16), squeeze=False)
    for col, (preset, res) in enumerate(presets.items()):
        train = next(iter(res["training"].values()))
        bar_chart(axes[0][col], {p: {k: v["tokens_per_s"] for k, v in t["results"].items()}
                                 for p, t in res["training"].items()},
                  f"{preset}: training tokens/s (b={train['batch']}, t={train['seq_len']}, fwd+bwd+AdamW)")
        bar_chart(axes[1][col], {f"batch {d['batch']}": {k: v["tokens_per_s"] for k, v in d["results"].items()}
                                 for d in res["decode"].values()},
                  f"{preset}: greedy cached decoding tokens/s ({next(iter(res['decode'].values()))['new_tokens']} new)")
        if "k_samples" in res:
            ks = res["k_samples"]
            bar_chart(axes[2][col], {"": {k: v["tokens_per_s"] for k, v in ks["results"].items()}},
                      f"{preset}: {ks['prompts']} prompts x K={ks['k']} samples, tokens/s")
        else:
            axes[2][col].axis("off")
        context_chart(axes[3][col], res["context"], preset)
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
        ax.bar_label(bars, fmt="{:,.0f}", fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel("tokens/s")
    ax.margins(y=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=min(len(series), 4))


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
    parser.add_argument("--k-prompts", type=int, default=64, help="prompts of the K-sample measurement (default: %(default)s)")
    parser.add_argument("--k", type=int, default=8, help="samples per prompt there (default: %(default)s)")
    parser.add_argument("--k-rows", type=int, default=64,
                        help="rows decoded together there, as the course's samplers do (default: %(default)s)")
    parser.add_argument("--bf16", default="auto", choices=["auto", "always", "never"],
                        help="measure training under bf16 autocast too: auto where the device multiplies bf16 "
                             "natively (default: %(default)s)")
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
                 "train_batch", "train_seq", "max_context", "k_prompts", "k", "k_rows"):
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
