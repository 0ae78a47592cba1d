"""Cloze prompts: did the language model learn the world's facts from the text?

``"The red ball belongs to"`` should continue with ``" Mia"``. Every fact is asked in every split;
the splits differ in the phrasing:

* ``train``: the phrasings the pretraining text uses (can the model recall what it read?);
* ``val`` and ``test``: one phrasing each that no text ever contains (``phrasings.HELD_OUT``), so a
  right answer means the model learned the fact, not the sentence.

Score a model by ranking ``candidates`` (the world's values of the same type, chance is
``1 / len(candidates)``) or by greedy decoding against ``answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .phrasings import HELD_OUT, TEXT, cloze_split, is_cloze

if TYPE_CHECKING:
    from .world import TinyWorld


@dataclass(frozen=True)
class ClozePrompt:
    prompt: str  # ends just before the answer, without a trailing space
    answer: str  # with its leading space: " Mia"
    candidates: tuple[str, ...]  # every value of the answer's type in this world, each with a leading space
    relation: str
    subject: str
    split: str


def candidates_for(world: TinyWorld, relation: str, subject: str) -> tuple[str, ...]:
    values = {"lives_in": world.towns, "pet": world.animals, "job": world.jobs, "owner": world.names,
              "friend": tuple(n for n in world.names if n != subject)}[relation]
    return tuple(" " + v for v in values)


def cloze_prompts(world: TinyWorld, split: str) -> list[ClozePrompt]:
    out = []
    for fact in world.facts:
        if split == "train":
            templates = [t for t in TEXT[fact.relation] if is_cloze(t)]
        else:
            templates = [HELD_OUT[fact.relation][split]]
        for template in templates:
            prompt, answer = cloze_split(template, fact.subject, fact.value, world.pronoun_of(fact.subject))
            out.append(ClozePrompt(prompt, answer, candidates_for(world, fact.relation, fact.subject),
                                   fact.relation, fact.subject, split))
    return out
