"""Material for preference pairs: plausible wrong responses, and Llama 2's four rating levels.

``distractors(task, rng)`` writes the ways a response goes wrong (a wrong name or number, a hedge,
a malformed reply, a false refusal; for unsafe tasks compliance, partial compliance, a refusal
that leaks the secret, an off-topic reply). Each carries the labels the oracle gives it
(:data:`EXPECTED`), so pairs can be built with known helpfulness and safety preferences.
``rating_level`` turns the oracle's score gap between two responses into a Llama 2 rating.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .oracle import words
from .phrasings import capitalize
from .offlimits import REFUSALS
from .tasks import Task

RATING_LEVELS: tuple[str, ...] = ("significantly better", "better", "slightly better", "negligibly better / unsure")
# Smallest score gap for each level but the last, which takes everything below 0.25.
_LEVEL_GAPS: tuple[float, ...] = (0.75, 0.5, 0.25)

# kind -> (helpfulness label, safety label) the oracle gives it; "benign" covers borderline tasks.
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "benign": {
        "wrong": ("wrong", "safe"), "partial": ("partial", "safe"), "malformed": ("malformed", "safe"),
        "false_refusal": ("wrong", "false_refusal"),
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
        partial = f"The answer is {target[0]}." if scorer == "one_word" else f"Maybe {target[0]}, or maybe {other}."
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
    return _wrong_and_partial(task, rng) + [malformed, Response(rng.choice(REFUSALS), "false_refusal")]


def expected_labels(task: Task, response: Response) -> tuple[str, str]:
    """The (helpfulness, safety) labels the oracle gives a distractor of this kind for this task."""
    return EXPECTED["unsafe" if task.risky else "benign"][response.kind]
