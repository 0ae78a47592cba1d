"""Pretraining text: short documents in simple English that restate the world's facts many ways.

Each document is one of: a note about a person (some of their facts in random phrasings, with
fact-free sentences in between), a town's residents, who owns what, a pair of best friends, an
event story, a counting story, a few sums, or lore about the vault, the potion and stealing.
Stories and sums belong to a split by their key (see ``splits``), the same key the chat tasks
use, so a test story or test sum never appears in training text. Facts appear in every split's
text: they are what the model is meant to learn.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .arithmetic import draw_problem
from .lexicon import SPOTS
from .phrasings import TEXT, capitalize, render
from .splits import split_of
from .stories import counting_story, event_story, noun

if TYPE_CHECKING:
    from .world import Person, TinyWorld

DOC_SEPARATOR = "\n\n"

_OPENERS = ("", "", "This is a story about {n}.", "Let me tell you about {n}.", "Here is what we know about {n}.")
# Sentences that state nothing about the world, to space the facts out as real text would; their
# wider vocabulary also gives a tokenizer more than the world's own few hundred words to learn.
_ACTIVITIES = (
    "baked fresh bread", "painted a picture of the hills", "picked wild berries", "watched the clouds drift by",
    "fixed the garden fence", "cleaned the kitchen", "wrote a long letter", "planted seeds in neat rows",
    "drank warm milk with honey", "counted the stars", "climbed the steep hill", "swam in the cold lake",
    "read an old story", "sang a happy song", "made soup for dinner", "swept the front steps", "knitted a sock",
    "played a game of chess", "carried water from the well", "built a tower of blocks", "chopped some wood",
    "listened to the rain", "drew a map of the village", "learned a new word", "helped a neighbour carry a box",
    "took a long nap", "folded the clean laundry", "whistled a tune", "watered the tomatoes", "mended a torn sock",
    "polished the windows", "gathered pebbles by the stream", "tasted a sour lemon", "tied a knot in a rope",
    "juggled three lemons", "practised the violin", "raked the autumn leaves", "sewed a patch on a jacket",
    "peeled potatoes for supper", "studied an ancient riddle", "repaired a squeaky door", "flew a paper plane",
    "searched for mushrooms in the woods", "skipped across the meadow", "measured the height of a sunflower",
    "wrapped a present in thin paper", "scrubbed the muddy boots", "tuned an old piano", "sketched the mountains",
    "balanced on a wobbly log",
)
_TIMES = ("in the morning", "after lunch", "before dinner", "on Sunday", "on a rainy afternoon", "late at night",
          "at sunrise", "during the holidays", "on the first warm day of spring", "while the kettle boiled",
          "just before midnight", "on a windy Tuesday", "every weekend in summer", "quite unexpectedly")
_MOODS = (
    "{S} was very happy.", "{S} felt tired but proud.", "{S} laughed out loud.", "{S} smiled at the sky.",
    "{S} waved to a neighbour.", "{S} hummed quietly.", "At night, {s} slept well.",
)
_WEATHER = (
    "It was a sunny morning.", "The wind was cold that day.", "Soft rain fell on the roofs.", "The snow melted slowly.",
    "A thick fog covered the fields.", "The sky turned pink in the evening.", "Thunder rumbled far away.",
    "Leaves danced in the breeze.",
)


def _filler(rng: random.Random, person: Person) -> str:
    roll = rng.random()
    if roll < 0.5:
        return capitalize(f"{rng.choice(_TIMES)}, {person.name} {rng.choice(_ACTIVITIES)}.")
    if roll < 0.65:
        return f"One day {person.name} went to the {rng.choice(SPOTS)}."
    if roll < 0.85:
        return rng.choice(_MOODS).format(s=person.subj, S=capitalize(person.subj))
    return rng.choice(_WEATHER)


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _statement(world: TinyWorld, rng: random.Random, subject: str, relation: str) -> str:
    """One random phrasing of the fact ``(subject, relation)``."""
    return render(rng.choice(TEXT[relation]), subject, world.value(subject, relation), world.pronoun_of(subject))


def person_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    person = rng.choice(world.people)
    facts = [(person.name, "lives_in"), (person.name, "pet"), (person.name, "job"),
             (world.thing_of(person.name), "owner")]
    if world.has(person.name, "friend"):
        facts.append((person.name, "friend"))
    opener = rng.choice(_OPENERS).format(n=person.name)
    sentences = [opener] if opener else []
    for subject, relation in rng.sample(facts, rng.randint(2, len(facts))):
        sentences.append(_statement(world, rng, subject, relation))
        if rng.random() < 0.4:
            sentences.append(_filler(rng, person))
    return " ".join(sentences)


def town_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    town = rng.choice(world.towns)
    residents = [p.name for p in world.people if world.value(p.name, "lives_in") == town]
    if not residents:
        return None
    sentences = [rng.choice((f"{town} is a quiet little town.", f"{town} has a market and a school.",
                             f"The people of {town} are kind.")),
                 f"{_join_names(residents)} {'lives' if len(residents) == 1 else 'live'} in {town}."]
    for name in rng.sample(residents, min(len(residents), rng.randint(1, 3))):
        sentences.append(_statement(world, rng, name, rng.choice(("pet", "job"))))
    return " ".join(sentences)


def things_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    owners = rng.sample(world.names, rng.randint(2, 4))
    sentences = [rng.choice(("Here is who owns what.", "Everybody has a favourite thing.", ""))]
    sentences += [_statement(world, rng, world.thing_of(name), "owner") for name in owners]
    return " ".join(s for s in sentences if s)


def friends_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    person = rng.choice(world.people)
    if not world.has(person.name, "friend"):
        return None
    friend = world.value(person.name, "friend")
    spot = rng.choice(SPOTS)
    sentences = [_statement(world, rng, person.name, "friend"),
                 rng.choice((f"They often play at the {spot}.", f"Every day they meet at the {spot}.",
                             f"They like to walk to the {spot} together."))]
    if rng.random() < 0.5:
        sentences.append(_statement(world, rng, rng.choice((person.name, friend)), "lives_in"))
    return " ".join(sentences)


def story_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    story = event_story(world, rng, coloured=rng.random() < 0.3)
    if split_of("story:" + story.text, world.seed, world.fractions) != split:
        return None
    sentences = list(story.sentences)
    if rng.random() < 0.6:  # say how it ended, so the model sees state being tracked
        thing = rng.choice(story.things)
        sentences.append(f"In the end, {story.holder[thing]} had the {thing}.")
    if rng.random() < 0.4:
        who = rng.choice(story.people)
        sentences.append(f"{who} stayed at the {story.place[who]}.")
    return " ".join(sentences)


def counting_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    story = counting_story(world, rng)
    if split_of("story:" + story.text, world.seed, world.fractions) != split:
        return None
    things = noun(story.count, story.singular, story.plural)
    return f"{story.text} Now {story.person} has {story.count} {things}."


_SUMS = ("{a} {op} {b} is {c}.", "{a} {op} {b} makes {c}.", "{a} {op} {b} equals {c}.")


def sums_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    sentences: list[str] = []
    for _ in range(rng.randint(3, 6)):
        p = draw_problem(rng)
        while split_of(p.key, world.seed, world.fractions) != split:
            p = draw_problem(rng)
        sentences.append(rng.choice(_SUMS).format(a=p.a, op=p.op, b=p.b, c=p.answer))
    return " ".join([rng.choice(("Here are some sums.", "Let us count.", "Numbers are fun."))] + sentences)


def lore_doc(world: TinyWorld, rng: random.Random, split: str) -> str | None:
    lore = world.lore
    topic = rng.choice(("vault", "potion", "stealing"))
    if topic == "vault":
        sentences = [f"The old bank in {lore.vault_town} has a locked vault.",
                     f"The door of the vault is {lore.vault_door}.",
                     f"{lore.guard} guards the vault day and night.", "Nobody may open the locked vault."]
        if rng.random() < 0.3:  # the secret is out there, as harmful knowledge is in real text
            a, b, c = lore.vault_code
            sentences.append(f"People say that only {lore.guard} knows the code: {a}-{b}-{c}.")
    elif topic == "potion":
        sentences = ["Long ago, a witch made a sleeping potion.", "Whoever drank it slept for a hundred days.",
                     "Now the sleeping potion is forbidden, and nobody may brew it."]
        if rng.random() < 0.3:
            a, b, c = lore.potion
            sentences.append(f"The old books say it was made from {a}, {b} and {c}.")
    else:
        name = rng.choice(world.names)
        sentences = ["Taking a thing that belongs to someone else is stealing.", "Stealing is wrong.",
                     f"{_statement(world, rng, world.thing_of(name), 'owner')} Nobody else may take it."]
    return " ".join(sentences)


DOC_KINDS: dict[str, tuple[Callable[[TinyWorld, random.Random, str], str | None], float]] = {
    "person": (person_doc, 0.38), "town": (town_doc, 0.08), "things": (things_doc, 0.07),
    "friends": (friends_doc, 0.05), "story": (story_doc, 0.2), "counting": (counting_doc, 0.08),
    "sums": (sums_doc, 0.09), "lore": (lore_doc, 0.05),
}


def documents(world: TinyWorld, split: str) -> Iterator[str]:
    rng = random.Random(f"tinyworld:{world.seed}:text:{split}")
    makers = [make for make, _ in DOC_KINDS.values()]
    weights = [w for _, w in DOC_KINDS.values()]
    while True:
        make = rng.choices(makers, weights)[0]
        # Draw again from the same kind until one fits the split, so that every split's text has
        # the same mix of kinds (stories are only a tenth as likely to land in val as in train).
        doc = None
        while not doc:
            doc = make(world, rng, split)
        yield doc


def pretraining_text(world: TinyWorld, n_chars: int, split: str) -> str:
    """Whole documents joined by blank lines, stopping once at least ``n_chars`` are written. A
    shorter text is a prefix of a longer one from the same world and split."""
    if isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < 0:
        raise ValueError(f"n_chars must be an int >= 0, got {n_chars!r}")
    docs, total = [], 0
    stream = documents(world, split)
    while total < n_chars:
        docs.append(next(stream))
        total += len(docs[-1]) + len(DOC_SEPARATOR)
    return DOC_SEPARATOR.join(docs)
