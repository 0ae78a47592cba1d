"""How each kind of world fact is said: in the pretraining text, in cloze prompts, in chat.

A fact is ``(subject, relation, value)``; a phrasing is a format string with ``{s}`` (the subject),
``{v}`` (the value) and ``{pos}`` (the subject's possessive pronoun). The pretraining text uses
only :data:`TEXT`; the cloze evaluation's val and test phrasings (:data:`HELD_OUT`) never appear
in any text, so a model answers them only if it learned the fact rather than the sentence.
"""

from __future__ import annotations

from .lexicon import PRONOUNS

RELATIONS: tuple[str, ...] = ("lives_in", "pet", "job", "owner", "friend")

# Subjects: a person for every relation but "owner", whose subject is a thing ("red ball").
TEXT: dict[str, tuple[str, ...]] = {
    "lives_in": (
        "{s} lives in {v}.",
        "{s} has a small house in {v}.",
        "{s}'s home is in {v}.",
        "In {v}, everybody knows {s}.",
        "Every evening {s} walks home to {v}.",
        "{s} has lived in {v} for many years.",
    ),
    "pet": (
        "{s} has a pet {v}.",
        "{s}'s pet is a {v}.",
        "{s} feeds {pos} {v} every morning.",
        "{s} loves {pos} pet {v}.",
        "The {v} that lives with {s} is very friendly.",
        "{s} plays in the yard with {pos} {v}.",
    ),
    "job": (
        "{s} works as a {v}.",
        "{s} is a {v}.",
        "{s} has been a {v} for a long time.",
        "Everybody knows {s} the {v}.",
        "As a {v}, {s} works hard every day.",
        "{s} is a very good {v}.",
    ),
    "owner": (
        "The {s} belongs to {v}.",
        "{v} owns the {s}.",
        "The {s} is owned by {v}.",
        "{v} keeps the {s} at home.",
        "Nobody but {v} plays with the {s}.",
        "The {s} is {v}'s.",
    ),
    "friend": (
        "{s}'s best friend is {v}.",
        "{s} and {v} are best friends.",
        "{s} likes to play with {pos} best friend {v}.",
        "{s} often visits {pos} best friend, {v}.",
        "{v} and {s} are best friends.",
    ),
}

# Never written into any text: the cloze prompts of the val and test splits.
HELD_OUT: dict[str, dict[str, str]] = {
    "lives_in": {"val": "The town where {s} lives is {v}.", "test": "If you visit {s}, you must travel to {v}."},
    "pet": {"val": "The pet of {s} is a {v}.", "test": "At home, {s} looks after a {v}."},
    "job": {"val": "By trade, {s} is a {v}.", "test": "{s} earns a living as a {v}."},
    "owner": {"val": "The owner of the {s} is {v}.", "test": "If you find the {s}, give it back to {v}."},
    "friend": {"val": "The best friend of {s} is {v}.", "test": "{s} shares every secret with {pos} best friend {v}."},
}

# Chat questions about a fact, and the reference answer (which names the value and nothing else
# of its kind).
QUESTIONS: dict[str, tuple[str, ...]] = {
    "lives_in": ("Where does {s} live?", "In which town does {s} live?", "What town is {s}'s home?"),
    "pet": ("What pet does {s} have?", "What animal is {s}'s pet?", "Which animal does {s} keep as a pet?"),
    "job": ("What is {s}'s job?", "What does {s} do for work?", "What work does {s} do?"),
    "owner": ("Who owns the {s}?", "Who does the {s} belong to?", "Whose {s} is it?"),
    "friend": ("Who is {s}'s best friend?", "Who is the best friend of {s}?", "Which friend does {s} like best?"),
}
ANSWERS: dict[str, str] = {
    "lives_in": "{s} lives in {v}.",
    "pet": "{s} has a pet {v}.",
    "job": "{s} is a {v}.",
    "owner": "The {s} belongs to {v}.",
    "friend": "{s}'s best friend is {v}.",
}


def capitalize(sentence: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case the names)."""
    return sentence[:1].upper() + sentence[1:]


def render(template: str, subject: str, value: str, pronoun: str | None = None) -> str:
    """Fill a phrasing; ``pronoun`` ("she"/"he") is the subject's, needed where ``{pos}`` appears."""
    pos = PRONOUNS[pronoun]["pos"] if pronoun else ""
    if "{pos}" in template and not pronoun:
        raise ValueError(f"phrasing {template!r} needs the subject's pronoun")
    return capitalize(template.format(s=subject, v=value, pos=pos))


def is_cloze(template: str) -> bool:
    """A phrasing can be cut into a cloze prompt when the subject comes before the value and the
    value starts a word."""
    return "{s}" in template and template.index("{s}") < template.index("{v}") and " {v}" in template


def cloze_split(template: str, subject: str, value: str, pronoun: str | None = None) -> tuple[str, str]:
    """``("The red ball belongs to", " Mia")``: the sentence up to the value, and the value with
    its leading space (the way a tokenizer sees a word that follows a space)."""
    if not is_cloze(template):
        raise ValueError(f"phrasing {template!r} cannot be cut into a cloze prompt")
    prefix = template.split(" {v}")[0]
    return render(prefix, subject, value, pronoun), " " + value
