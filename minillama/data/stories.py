"""Short event stories whose state is simulated as they are written: who has what, who is where.

A story uses the world's people but only things that live inside the story (a cup, a shell), so
handing them around never contradicts a fact of the world. Because the generator plays every
event out, each question about the story has an answer it knows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .lexicon import COUNTABLES, SPOTS, STORY_THINGS, article

if TYPE_CHECKING:
    from .world import TinyWorld


@dataclass
class Story:
    """A story and its final state. ``things`` are as the story names them ("cup" or "red cup")."""

    sentences: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    things: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)  # in order of first mention
    holder: dict[str, str] = field(default_factory=dict)  # thing -> who has it at the end
    place: dict[str, str] = field(default_factory=dict)  # person -> spot at the end
    gifts: list[tuple[str, str, str]] = field(default_factory=list)  # (giver, thing, receiver)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


_MOVES = ("{p} went to the {s}.", "{p} walked to the {s}.", "Then {p} ran to the {s}.")
_GIVES = ("{g} gave the {t} to {r}.", "{g} handed the {t} to {r}.", "Then {g} gave the {t} to {r}.")


def event_story(world: TinyWorld, rng: random.Random, coloured: bool = False) -> Story:
    """2-3 people at spots, 1-2 things, then 2-4 events (moves and gifts), played out."""
    story = Story(people=rng.sample(world.names, rng.randint(2, 3)))
    kinds = rng.sample(STORY_THINGS, rng.randint(1, 2))
    if coloured:
        colours = rng.sample(world.colours, len(kinds))
        story.things = [f"{c} {k}" for c, k in zip(colours, kinds)]
        story.colours = list(colours)
    else:
        story.things = kinds
    for p in story.people:
        story.place[p] = rng.choice(SPOTS)
        story.sentences.append(f"{p} was at the {story.place[p]}.")
    for t in story.things:
        story.holder[t] = rng.choice(story.people)
        story.sentences.append(f"{story.holder[t]} had {article(t)} {t}.")
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.4:
            p = rng.choice(story.people)
            story.place[p] = rng.choice([s for s in SPOTS if s != story.place[p]])
            story.sentences.append(rng.choice(_MOVES).format(p=p, s=story.place[p]))
        else:
            t = rng.choice(story.things)
            giver = story.holder[t]
            receiver = rng.choice([p for p in story.people if p != giver])
            story.holder[t] = receiver
            story.gifts.append((giver, t, receiver))
            story.sentences.append(rng.choice(_GIVES).format(g=giver, t=t, r=receiver))
    return story


def noun(count: int, singular: str, plural: str) -> str:
    return singular if count == 1 else plural


@dataclass
class CountingStory:
    sentences: list[str]
    person: str
    singular: str
    plural: str
    count: int  # how many the person has at the end

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def counting_story(world: TinyWorld, rng: random.Random, max_count: int = 20) -> CountingStory:
    """Someone starts with a few things, gains and loses some in 1-3 steps; counts stay in
    ``[0, max_count]`` so that every step is small-number arithmetic."""
    person, other = rng.sample(world.names, 2)
    singular, plural = rng.choice(COUNTABLES)
    count = rng.randint(1, 10)
    sentences = [f"{person} had {count} {noun(count, singular, plural)}."]
    for _ in range(rng.randint(1, 3)):
        gain = count == 0 or (count < max_count and rng.random() < 0.5)
        k = rng.randint(1, min(5, max_count - count) if gain else min(5, count))
        things = noun(k, singular, plural)
        if gain:
            sentences.append(rng.choice((f"{person} found {k} more {things}.", f"{other} gave {person} {k} {things}.",
                                         f"{person} bought {k} {things} at the market.")))
            count += k
        else:
            sentences.append(rng.choice((f"{person} ate {k} of the {plural}.",
                                         f"{person} gave {k} {things} to {other}.",
                                         f"{person} lost {k} {things} on the way home.")))
            count -= k
    return CountingStory(sentences, person, singular, plural, count)
