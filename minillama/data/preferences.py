"""Preference pairs: Llama 2's four rating levels, the oracle as annotator, plausible wrong responses.

``distractors(task, rng)`` writes the ways a response goes wrong (a wrong name or number, a hedge,
a malformed reply, a false refusal; for unsafe tasks compliance, partial compliance, a refusal
that leaks the secret, an off-topic reply). Each carries the labels the oracle gives it
(:data:`EXPECTED`), so pairs can be built with known helpfulness and safety preferences.
``rating_level`` turns the oracle's score gap between two responses into a Llama 2 rating, and
:func:`pairs_from_candidates` makes the rated :class:`Pair` s of one prompt's candidates.

Two candidates with the same score are a close call, "negligibly better / unsure": when a finer
signal on the same axis tells them apart (of two unsafe replies, the one that gives away less of
the secret) it picks the chosen one, otherwise the annotator is unsure and a coin flip does (see
:func:`preference_key`). So a judge can do little better than chance on unsure pairs, as Llama 2's
reward models did on theirs; ordering ties by the *other* axis instead (a wrong answer over a
refusal) would make the level the easiest of all, a refusal being easy to spot. The oracle's
safety scores are 0, 0.5 and 1, so safety pairs are "significantly better", "better" or
"negligibly better / unsure", never "slightly better".
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..fileio import read_records, write_jsonl
from . import forms
from .oracle import Oracle, Qualities, leaked, words
from .phrasings import capitalize
from .offlimits import REFUSALS
from .tasks import Task

RATING_LEVELS: tuple[str, ...] = ("significantly better", "better", "slightly better", "negligibly better / unsure")
AXES: tuple[str, ...] = ("helpfulness", "safety")  # what a pair is rated on: one reward model each
# Smallest score gap for each level but the last, which takes everything below 0.25.
_LEVEL_GAPS: tuple[float, ...] = (0.75, 0.5, 0.25)

# kind -> (helpfulness label, safety label) the oracle gives it; "benign" covers borderline tasks.
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "benign": {
        "wrong": ("wrong", "safe"), "partial": ("partial", "safe"), "malformed": ("malformed", "safe"),
        "false_refusal": ("wrong", "false_refusal"), "ignores_form": ("correct", "safe"),
        "rambles": ("correct", "safe"),
    },
    "unsafe": {
        "unsafe_compliance": ("correct", "unsafe_compliance"), "partial_compliance": ("partial", "unsafe_compliance"),
        "leaky_refusal": ("wrong", "unsafe_compliance"), "off_topic": ("wrong", "unsafe_compliance"),
        "malformed": ("malformed", "unsafe_compliance"),
    },
}
_OFF_TOPIC = ("I like to walk in the park on sunny days.", "Cats like to sleep in the sun.", "The sky is blue today.")
_MALFORMED = ("", "...", " ".join(["the"] * 45))


@dataclass(frozen=True)
class Response:
    text: str
    kind: str  # a key of EXPECTED["benign"] or EXPECTED["unsafe"]


def rating_level(score_a: float, score_b: float) -> str:
    """Llama 2's rating for the better of two responses, from the gap between their scores in
    [0, 1]: >= 0.75 significantly better, >= 0.5 better, >= 0.25 slightly better, else negligibly
    better / unsure."""
    for name, s in (("score_a", score_a), ("score_b", score_b)):
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {s}")
    gap = abs(score_a - score_b)
    for level, edge in zip(RATING_LEVELS, _LEVEL_GAPS):
        if gap >= edge - 1e-9:
            return level
    return RATING_LEVELS[-1]


def _swap(text: str, old: str, new: str) -> str:
    """Replace the word ``old`` by ``new`` everywhere, keeping a capital where there was one."""
    def repl(m: re.Match[str]) -> str:
        return capitalize(new) if m.group(0)[0].isupper() else new
    return re.sub(rf"\b{re.escape(old)}\b", repl, text, flags=re.IGNORECASE)


def _other(rng: random.Random, task: Task, exclude: set[str]) -> str:
    """A wrong candidate, preferring one the prompt mentions (the most tempting mistake)."""
    pool = [c for c in task.candidates if c not in exclude]
    in_prompt = [c for c in pool if set(words(c)) <= set(words(task.prompt))]
    return rng.choice(in_prompt or pool)


def _wrong_and_partial(task: Task, rng: random.Random) -> list[Response]:
    target, ref, scorer = task.target, task.reference, task.scorer
    if scorer in ("choice", "one_word"):
        other = _other(rng, task, set(target))
        wrong = _swap(ref, target[0], other)
        partial = f"Maybe {target[0]}, or maybe {other}."
        return [Response(wrong, "wrong"), Response(partial, "partial")]
    if scorer == "number":
        t = int(target[0])
        w = t + rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if t + d >= 0])
        wrong = re.sub(rf"\b{t}\b(?!.*\b{t}\b)", str(w), ref)  # the last mention: the answer
        out = [Response(wrong, "wrong")]
        if target[0] not in words(task.prompt):  # a hedge is only visible when the answer is no echo
            out.append(Response(f"It is {t} or {w}.", "partial"))
        return out
    if scorer == "repeat":
        word, n = target[0], len(target)
        other = rng.choice([w for w in ("red", "cat", "cup", "blue") if w != word])
        return [Response(" ".join([other] * n), "wrong"), Response(" ".join([word] * (n + 1)), "partial")]
    if scorer == "set":
        others = [c for c in task.candidates if c not in target]
        wrong = rng.sample(others, len(target))
        partial = list(target[:-1]) if len(target) > 1 else [target[0], rng.choice(others)]
        return [Response(capitalize(", ".join(wrong)) + ".", "wrong"),
                Response(capitalize(", ".join(partial)) + ".", "partial")]
    # sequence: numbers that are not the ones asked for, and the right ones in the wrong order
    others = [str(x) for x in range(31) if str(x) not in target]
    return [Response(", ".join(rng.sample(others, len(target))) + ".", "wrong"),
            Response(", ".join(reversed(target)) + ".", "partial")]


def _unsafe(task: Task, rng: random.Random) -> list[Response]:
    out = [Response(task.compliance, "unsafe_compliance"),
           Response(f"{rng.choice(REFUSALS)} {task.compliance}", "leaky_refusal"),
           Response(rng.choice(_OFF_TOPIC), "off_topic")]
    if len(task.target) > 1:
        out.append(Response(f"You need {task.target[0]} first.", "partial_compliance"))
    return out


def distractors(task: Task, rng: random.Random) -> list[Response]:
    """Plausible wrong responses to ``task``, one of each kind that applies (see :data:`EXPECTED`)."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task, got {type(task).__name__}")
    malformed = Response(rng.choice(_MALFORMED), "malformed")
    if task.risky:
        return _unsafe(task, rng) + [malformed]
    out = _wrong_and_partial(task, rng) + [malformed, Response(rng.choice(REFUSALS), "false_refusal")]
    if task.form:  # right content, the form ignored; right content and form, then a loop
        out.append(Response(forms.break_form(task.form, task.target, task.reference), "ignores_form"))
    return out + [Response(forms.ramble(task.reference), "rambles")]


def expected_labels(task: Task, response: Response) -> tuple[str, str]:
    """The (helpfulness, safety) labels the oracle gives a distractor of this kind for this task."""
    return EXPECTED["unsafe" if task.risky else "benign"][response.kind]


# ---------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` is the better response to ``prompt``. ``gap`` is the oracle's
    score of chosen minus rejected on the axis the pair was rated on (0 for a close call: a tie on
    it). ``unsure`` marks a pair the oracle cannot order at all (equal score and no finer signal):
    a coin flip chose ``chosen``, so no judge, the oracle included, expects more than half of such
    pairs right."""

    prompt: str
    chosen: str
    rejected: str
    rating: str  # one of RATING_LEVELS
    gap: float
    unsure: bool = False
    quality: str = ""  # what tells the two apart (pair_quality); "" in files written before it existed

    def __post_init__(self) -> None:
        if self.rating not in RATING_LEVELS:
            raise ValueError(f"Pair.rating must be one of {RATING_LEVELS}, got {self.rating!r}")
        if not 0.0 <= self.gap <= 1.0:
            raise ValueError(f"Pair.gap must be in [0, 1], got {self.gap}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        return cls(**data)


PAIR_FIELDS: tuple[str, ...] = ("prompt", "chosen", "rejected", "rating", "gap", "unsure", "quality")
PAIR_REQUIRED: tuple[str, ...] = ("prompt", "chosen", "rejected", "rating", "gap")


def save_pairs(path: str | Path, pairs: Sequence[Pair]) -> None:
    """Write one pair per line (json), atomically."""
    write_jsonl(path, (p.to_dict() for p in pairs))


def load_pairs(*paths: str | Path) -> list[Pair]:
    return [pair for path in paths for pair in read_records(path, Pair.from_dict, "pair", PAIR_FIELDS, PAIR_REQUIRED)]


def level_counts(pairs: Sequence[Pair]) -> dict[str, int]:
    return {level: sum(p.rating == level for p in pairs) for level in RATING_LEVELS}


def check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"kind must be one of {AXES}, got {axis!r}")


def preference_key(oracle: Oracle, task: Task, response: str, axis: str) -> tuple[float, float]:
    """``(score, tie_breaker)``: the oracle's score on ``axis`` (helpfulness or safety), and a finer
    signal on the same axis that orders two responses with the same score, 0 where there is none.
    Only safety on an off-limits prompt has one: how little of the secret a response gives away
    (an off-topic reply beats full compliance). Two responses with equal keys are an unsure call."""
    check_axis(axis)
    if axis == "helpfulness":
        return oracle.helpfulness(task, response).score, 0.0
    score = oracle.safety(task, response).score
    if task.risky:
        return score, -len(leaked(task, response)) / len(set(task.target))
    return score, 0.0


QUALITIES: tuple[str, ...] = ("content", "form", "clean", "several", "none", "safety")


def pair_quality(oracle: Oracle, task: Task, chosen: str, rejected: str, axis: str) -> str:
    """What tells ``chosen`` from ``rejected``: on the helpfulness axis the one quality of
    :func:`~minillama.data.oracle.qualities` in which they differ (``"content"``, ``"form"``,
    ``"clean"``), ``"several"``, or ``"none"``; on the safety axis ``"safety"``. Form pairs are the
    ones a small judge can tell by reading; content pairs need the facts."""
    if axis == "safety":
        return "safety"
    return differing_quality(oracle.qualities(task, chosen), oracle.qualities(task, rejected))


def differing_quality(a: Qualities, b: Qualities) -> str:
    """``"content"``, ``"form"`` or ``"clean"`` when ``a`` and ``b`` differ in that one quality alone,
    ``"several"`` when in more, ``"none"`` when in none (see :func:`pair_quality`)."""
    differ = [name for name in ("content", "form", "clean") if getattr(a, name) != getattr(b, name)]
    return differ[0] if len(differ) == 1 else ("several" if differ else "none")


def pairs_from_candidates(oracle: Oracle, task: Task, candidates: list[tuple[str, bool]], axis: str,
                          rng: random.Random, max_pairs: int) -> list[Pair]:
    """Every pair of ``candidates`` (text, is_model_sample), ordered by :func:`preference_key` or,
    where the keys are equal, by a coin flip (an unsure call); then at most ``max_pairs`` of them
    taken round-robin over the rating levels, so that rare levels are not crowded out."""
    keys = [preference_key(oracle, task, text, axis) for text, _ in candidates]
    # Each candidate's qualities read once, not once per pair it is in.
    quals = [oracle.qualities(task, text) for text, _ in candidates] if axis == "helpfulness" else []
    by_level: dict[str, list[tuple[bool, float, Pair]]] = {level: [] for level in RATING_LEVELS}
    for i, j in itertools.combinations(range(len(candidates)), 2):
        coin = rng.random() < 0.5  # drawn for every pair, so one pair's order does not shift the next's
        hi, lo = (i, j) if keys[i] > keys[j] or (keys[i] == keys[j] and coin) else (j, i)
        (s_hi, _), (s_lo, _) = keys[hi], keys[lo]
        level = rating_level(s_hi, s_lo) if s_hi != s_lo else RATING_LEVELS[-1]
        quality = differing_quality(quals[hi], quals[lo]) if quals else "safety"
        pair = Pair(task.prompt, candidates[hi][0], candidates[lo][0], level, s_hi - s_lo, keys[i] == keys[j], quality)
        # Pairs of two model samples first, then a sample against a written response: a reward
        # model must judge the policy's own outputs, whose mistakes (an answer to another question,
        # a garbled name) are not the ones the distractors make.
        written = 2 - candidates[hi][1] - candidates[lo][1]
        by_level[level].append((written, rng.random(), pair))
    queues = [sorted(by_level[level], key=lambda e: e[:2]) for level in RATING_LEVELS if by_level[level]]
    rng.shuffle(queues)  # no level is always first in line when max_pairs is small
    picked = []
    for round_ in itertools.zip_longest(*queues):
        picked += [entry[2] for entry in round_ if entry is not None]
    return picked[:max_pairs]
