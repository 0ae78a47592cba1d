"""The course report: ``report.md`` with every figure and plot of a course run, from the stages' results."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..data.preferences import RATING_LEVELS
from ..data.tasks import SAFETY_CLASSES
from ..evaluate.oracle import ANSWER_QUALITIES, format_change, stage_table
from ..fileio import write_text
from ..stages.rejection import ORACLE_LABELS


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_report(out: Path, preset: str, results: dict[str, Any], timings: dict[str, float],
                 speed: str = "") -> Path:
    metrics = results["eval"]
    shutil.copyfile(out / "pretrain" / "loss.png", out / "loss.png")
    lines = [f"# minillama course report ({preset} preset)", "",
             "Every figure below was computed by this run (`minillama course`); nothing is copied in.", "",
             "## Pretraining", "", "![loss curve](loss.png)", "",
             "| measure | value |", "|---|---|",
             f"| parameters | {metrics['parameters']:,} |",
             f"| optimizer steps | {metrics['steps']} |",
             f"| median training speed | {metrics['tokens_per_s_median']:,.0f} tokens/s |",
             f"| first / last training loss | {metrics['train_loss_first']:.3f} / {metrics['train_loss_last']:.3f} |",
             f"| validation loss (nats/token) | {metrics['val_loss']:.3f} |",
             f"| unigram baseline on the same tokens | {metrics['unigram_val_loss']:.3f} |",
             f"| uniform baseline, log(vocab) | {metrics['uniform_loss']:.3f} |", "",
             "## Does the model know the world's facts?", "",
             "Cloze prompts in phrasings that never occur in the training text (e.g. \"If you visit Nina, "
             "you must travel to\"). *Ranked*: the true answer has the highest probability among the "
             "candidates of its kind (all towns, all pets, ...). *Greedy*: the model's own completion is "
             "exactly the answer.", "",
             "| split | prompts | ranked accuracy | greedy accuracy | chance (ranked) |", "|---|---|---|---|---|"]
    for split, c in metrics["cloze"].items():
        lines.append(f"| {split} | {c['n']} | {_pct(c['ranked'])} | {_pct(c['greedy'])} | {_pct(c['chance'])} |")
    lines += ["", "By relation (test split):", "", "| relation | prompts | ranked | greedy | chance |",
              "|---|---|---|---|---|"]
    for rel, c in metrics["cloze"]["test"]["by_relation"].items():
        lines.append(f"| {rel} | {c['n']} | {_pct(c['ranked'])} | {_pct(c['greedy'])} | {_pct(c['chance'])} |")
    c = metrics["copying"]
    lines += ["", "## Can the model copy from its context?", "",
              f"{c['n']} lists of {c['length']} random words and numbers, each said and then repeated word "
              "for word (\"Mia wrote down: frog, 17, cup. Leo repeated: frog, 17, cup.\"). A model that copies "
              "pays almost nothing for the repeat; this one pays "
              f"{c['repeat_nats']:.2f} nats per token for it against {c['first_list_nats']:.2f} for the first "
              f"list ({c['repeat_over_first']:.0%}). Tasks that ask to repeat, list or sort what the prompt "
              "says rest on that skill (see the helpfulness table by task below)."]
    lines += ["", "## Samples", ""]
    for s in metrics["samples"]:
        lines.append(f"**{s['prompt']}**")
        for key, text in s.items():
            if key != "prompt":
                lines.append(f"- {key}: `{text.replace(chr(10), ' / ')}`")
        lines.append("")
    lines += post_training_report(results)
    lines += ["## Time per stage", ""] + ([speed, ""] if speed else [])
    lines += ["| stage | seconds (this invocation; a stage found done costs ~0) |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()]
    lines.append(f"| total | {sum(timings.values()):.1f} |")
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _accuracy_rows(metrics: dict[str, Any]) -> list[str]:
    rows = ["| reward model | loss | overall | " + " | ".join(RATING_LEVELS) + " |", "|---|---|---|" + "---|" * len(RATING_LEVELS)]
    for variant, label in (("margin", "with margin"), ("no_margin", "without margin")):
        acc = metrics[variant]
        levels = [_pct(acc["by_level"][lvl]["accuracy"]) + f" (n={acc['by_level'][lvl]['n']})"
                  if lvl in acc["by_level"] else "n/a" for lvl in RATING_LEVELS]
        rows.append(f"| {metrics['kind']} | {label} | {_pct(acc['accuracy'])} | " + " | ".join(levels) + " |")
    acc = metrics["margin"]
    levels = [_pct(acc["by_level"][lvl]["ceiling"]) if lvl in acc["by_level"] else "n/a" for lvl in RATING_LEVELS]
    rows.append(f"| {metrics['kind']} | a perfect judge | {_pct(acc['ceiling'])} | " + " | ".join(levels) + " |")
    return rows


def post_training_report(results: dict[str, Any]) -> list[str]:
    """The Llama 2 recipe's sections of the report, for the stages that ran."""
    lines: list[str] = []
    if "stages" in results:
        stages = results["stages"]
        lines += ["## Post-training, stage by stage (held-out test prompts, scored by the oracle)", "",
                  stage_table(stages["results"], compare="combined"), "",
                  "Each stage against the stage it builds on, on the metric it targets (paired bootstrap over "
                  "prompts, 95%), and the same change in each quality of a harmless answer apart: a gain in form "
                  "never passes as a gain in content:", "",
                  "| stage | vs | metric | change | improves? | content acc. | form | clean |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, c in stages["changes"].items():
            quality = [_change(c["by_quality"][q]) if q in c.get("by_quality", {}) else "n/a" for q in ANSWER_QUALITIES]
            lines.append(f"| {name} | {c['vs']} | {c['metric']} | {_change(c)} | {'yes' if c['improves'] else 'no'} | "
                         + " | ".join(quality) + " |")
        if "vs_demonstrations" in stages:
            lines += ["", "Each stage's answer against the annotators' demonstration for the same test prompt, "
                      "judged by the oracle (win 1, tie 0.5; Llama 2 found its RLHF model beat its annotators' "
                      "writing):", "", "| stage | win rate | wins | ties | losses |", "|---|---|---|---|---|"]
            for name, w in stages["vs_demonstrations"].items():
                lines.append(f"| {name} | {w['mean']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}] | {w['wins']} | {w['ties']} "
                             f"| {w['losses']} |")
        lines += ["", "Helpfulness accuracy by task kind:", ""]
        kinds = sorted({k for r in stages["results"].values() for k in r["by_kind"]})
        lines += ["| stage | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for name, r in stages["results"].items():
            cells = [f"{r['by_kind'][k]['helpful_accuracy']['mean']:.2f}"
                     if "helpful_accuracy" in r["by_kind"].get(k, {}) else "-" for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if "rm_helpfulness" in results and "rm_safety" in results:
        lines += ["## Reward models (held-out pairs)", ""]
        lines += _accuracy_rows(results["rm_helpfulness"]) + _accuracy_rows(results["rm_safety"])[2:] + [""]
        lines += _quality_rows(results["rm_helpfulness"]["margin"])
        lines += ["*A perfect judge*: the accuracy the oracle itself expects on the same pairs. It gets every pair "
                  "right except the unsure ones it cannot order (equal scores, no finer signal on the axis), where "
                  "a coin flip chose the winner and any judge gets half. That, not 100%, bounds each reward model.",
                  ""]
    if "rejection" in results:
        lines += ["## Rejection sampling", "", "![rounds](rejection/rounds.png)", "",
                  "Max and median reward over the first K samples, and the oracle's score of the reward "
                  "models' pick against the oracle's own best pick:", "", "![reward vs K](rejection/reward_vs_k.png)", ""]
        threshold = results["rejection"]["rounds"].get("threshold")
        if threshold:
            lines += [f"A kept answer must clear the reward {threshold['threshold']:.3f}, chosen on "
                      f"{threshold['samples']} samples of {threshold['prompts']} validation prompts as the level that "
                      f"best tells good samples (oracle score >= {threshold['good']}) from the rest: above it "
                      f"{_pct(threshold['purity'])} of those samples are good (against {_pct(threshold['good_share'])} "
                      f"of all), and {_pct(threshold['coverage'])} of the good ones are kept.", ""]
        lines += _kept_rows(results["rejection"]["rounds"]["rounds"])
    if "dpo" in results:
        counts = results["dpo"]["pairs_by_class"]
        lines += ["## DPO", "", "On-policy pairs (round 1's samples ranked by the oracle) per prompt class, and those "
                  "DPO trained on: no more borderline pairs than off-limits ones. Every borderline pair prefers an "
                  "answer to a request that only looks risky, and with many of them DPO learns to answer "
                  "off-limits requests too.", "", "| pairs | " + " | ".join(SAFETY_CLASSES) + " |",
                  "|---|" + "---|" * len(SAFETY_CLASSES)]
        lines += [f"| {name.replace('_', ' ')} | " + " | ".join(str(row[c]) for c in SAFETY_CLASSES) + " |"
                  for name, row in counts.items()] + [""]
    return lines


def _change(c: dict[str, float]) -> str:
    return format_change(c["mean"], c["lo"], c["hi"])


def _quality_rows(acc: dict[str, Any]) -> list[str]:
    """The helpfulness reward model's held-out accuracy by what tells a pair apart."""
    if "by_quality" not in acc:
        return []
    rows = ["The helpfulness reward model (with margin) by what tells a pair apart: form and degeneration can "
            "be read off the answer; content needs the facts the policy itself lacks.", "",
            "| pairs differing in | pairs | accuracy | a perfect judge |", "|---|---|---|---|"]
    rows += [f"| {quality} | {a['n']} | {_pct(a['accuracy'])} | {_pct(a['ceiling'])} |"
             for quality, a in acc["by_quality"].items()]
    return rows + [""]


def _kept_rows(rounds: list[dict[str, Any]]) -> list[str]:
    """What every round fine-tuned on: its kept answers per prompt class, by the oracle's label."""
    lines = ["What each round fine-tuned on: the kept answer per prompt (best of all rounds so far), as the oracle "
             "labels it:", "", "| round | prompts | " + " | ".join(x.replace("_", " ") for x in ORACLE_LABELS) + " |",
             "|---|---|" + "---|" * len(ORACLE_LABELS)]
    for m in rounds:
        for cls, row in m["kept_labels"].items():
            lines.append(f"| {m['round']} | {cls} | " + " | ".join(str(row.get(x, 0)) for x in ORACLE_LABELS) + " |")
    return lines + [""]
