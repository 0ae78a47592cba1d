"""Answer forms and degeneration: the qualities of an answer that a small judge can check by reading it.

Every TinyWorld prompt begins with an instruction about the *form* of the answer ("Answer with a
single word.", "Reply with just the number.", ...). Whether a response keeps to it is a question of
its surface, not of its facts, so a reward model can learn it from a few hundred pairs, where
telling a right name from a wrong one needs the same recall the policy lacks. That is the gap
between generating and verifying that Llama 2's argument needs ("annotators compare better than
they write"): a sample that keeps the form beats a demonstration that ignores it, and a judge can
tell which is which.

=========  ================================================  ==========================================
form       the prompt asks for                               the first sentence of a response must be
=========  ================================================  ==========================================
one_word   a single word                                     one word ("Leo.")
number     the number only                                   digits only ("12")
sentence   a full sentence                                   >= 3 words, a capital (or digit) first,
                                                             ending in . ! or ?
list       the items separated by commas                     >= 2 comma-separated items of <= 2 words
yes_no     yes or no first                                   a sentence whose first word is yes or no
=========  ================================================  ==========================================

Only the first sentence is read for the form, so that form and degeneration stay apart: a
response is *degenerate* (:func:`degenerate`) when it says a sentence twice or runs on past
``MAX_SENTENCES`` sentences, the two ways the tiny model loops. "Leo. Leo. Leo." keeps the form
and degenerates; "The answer is Leo." breaks the form and does not.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from .phrasings import capitalize

FORMS: tuple[str, ...] = ("one_word", "number", "sentence", "list", "yes_no")
# Several phrasings each, none with a number word in it (the oracle reads "one" as 1).
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "one_word": ("Answer with a single word.", "Reply in a single word.", "Use just a single word."),
    "number": ("Reply with just the number.", "Answer with the number only.", "Give only the number."),
    "sentence": ("Answer in a full sentence.", "Reply with a complete sentence.", "Use a full sentence."),
    "list": ("Answer with a comma-separated list.", "Reply with the items separated by commas.",
             "Give a list, with commas between the items."),
    "yes_no": ("Start your answer with yes or no.", "Begin with yes or no.", "Say yes or no first."),
}
MAX_SENTENCES = 2
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return form


def instruction(form: str, rng: random.Random) -> str:
    """One phrasing of the instruction that asks for ``form``."""
    return rng.choice(INSTRUCTIONS[check_form(form)])


def sentences(text: str) -> list[str]:
    """``text`` cut after each ``.``, ``!`` or ``?`` that a space follows; an unfinished tail
    counts as a sentence (an answer cut off at the token limit ran on)."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text.strip())) if s]


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def follows(form: str, response: str) -> bool:
    """Whether the first sentence of ``response`` has ``form`` (table in the module docstring)."""
    check_form(form)
    parts = sentences(response)
    if not parts:
        return False
    first = parts[0]
    ws = _words(first)
    if form == "one_word":
        return len(ws) == 1 and not ws[0].isdigit()
    if form == "number":
        return re.fullmatch(r"\d+[.!]?", first) is not None
    if form == "sentence":
        return len(ws) >= 3 and (first[0].isupper() or first[0].isdigit()) and first[-1] in ".!?"
    if form == "list":
        items = [_words(item) for item in first.rstrip(".!?").split(",")]
        return len(items) >= 2 and all(1 <= len(item) <= 2 for item in items)
    return bool(ws) and ws[0].lower() in ("yes", "no")


def degenerate(response: str) -> bool:
    """Whether ``response`` says a sentence twice (ignoring case and punctuation) or has more than
    ``MAX_SENTENCES`` sentences."""
    said = [" ".join(_words(s)).lower() for s in sentences(response)]
    said = [s for s in said if s]
    return len(said) > MAX_SENTENCES or len(set(said)) < len(said)


def in_form(form: str, target: Sequence[str], sentence: str) -> str:
    """The answer ``target`` written in ``form``; ``sentence`` is the full-sentence answer (the
    ``sentence`` and ``yes_no`` forms use it as it is)."""
    check_form(form)
    if form == "one_word":
        return capitalize(target[0]) + "."
    if form == "number":
        return target[0]
    if form == "list":
        return capitalize(", ".join(target)) + "."
    return sentence


def break_form(form: str, target: Sequence[str], reference: str) -> str:
    """A right answer that ignores ``form``: the kind of demonstration a careless writer gives
    (a sentence where one word was asked, the bare word where a sentence was, "and" for commas,
    yes or no said last)."""
    check_form(form)
    if form in ("one_word", "number"):
        return f"The answer is {target[0]}."
    if form == "sentence":
        return target[0]
    if form == "list":
        return capitalize(" and ".join(target)) + "."
    body = " ".join(sentences(reference)[1:]).rstrip(".!?")
    return f"{body}, so {target[0]}." if body else f"I would say {target[0]}."


FILLER = "I hope that helps."


def ramble(answer: str) -> str:
    """``answer`` followed by a filler sentence said twice: degenerate (:func:`degenerate`), with
    the same content and form."""
    answer = answer.strip()
    return f"{answer if answer[-1:] in '.!?' else answer + '.'} {FILLER} {FILLER}"
