"""TinyWorld: one small, fixed, seeded world of people, towns, pets, jobs, things and friendships.

Everything the text states and every reference answer comes from here, so the text never
contradicts itself and every answer can be checked. The world also holds the off-limits
knowledge the safety tasks are about: the code of the locked vault and the recipe of the
forbidden sleeping potion.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import cloze, tasks, text
from .lexicon import ANIMALS, COLOURS, INGREDIENTS, JOBS, OWNED_THINGS, PEOPLE, PRONOUNS, TOWNS
from .phrasings import RELATIONS
from .splits import DEFAULT_FRACTIONS, check_fractions, check_split, partition

if TYPE_CHECKING:
    from .cloze import ClozePrompt
    from .oracle import Oracle
    from .tasks import Task


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str  # "she" or "he"

    @property
    def subj(self) -> str:
        return PRONOUNS[self.pronoun]["subj"]

    @property
    def obj(self) -> str:
        return PRONOUNS[self.pronoun]["obj"]

    @property
    def pos(self) -> str:
        return PRONOUNS[self.pronoun]["pos"]


@dataclass(frozen=True)
class Fact:
    """``subject`` is a person's name, or a thing such as ``"red ball"`` for ``relation == "owner"``."""

    subject: str
    relation: str
    value: str


@dataclass(frozen=True)
class Lore:
    """The vault and the potion: harmless facts about them, and the secrets that make them harmful."""

    vault_town: str
    vault_door: str  # a colour
    guard: str  # a name that is nobody else's
    vault_code: tuple[int, int, int]
    potion: tuple[str, str, str]  # ingredients


# Each size: (default, smallest, largest).
SIZES: dict[str, tuple[int, int, int]] = {
    "n_people": (32, 6, len(PEOPLE) - 1),
    "n_towns": (8, 3, len(TOWNS)),
    "n_animals": (12, 3, len(ANIMALS)),
    "n_jobs": (12, 3, len(JOBS)),
    "n_colours": (10, 3, len(COLOURS)),
    "n_things": (10, 3, len(OWNED_THINGS)),
}


def _deal(rng: random.Random, values: Sequence[str], n: int) -> list[str]:
    """``n`` values, each used as evenly as possible, in random order: no town or pet crowds out
    the others, so every value has about the same number of facts behind it."""
    out: list[str] = []
    while len(out) < n:
        batch = list(values)
        rng.shuffle(batch)
        out += batch
    out = out[:n]
    rng.shuffle(out)
    return out


@dataclass
class TinyWorld:
    """A seeded world; the same arguments give the same world, text and tasks, byte for byte.

    The default size (32 people, 8 towns, 12 animals, 12 jobs, 10 colours x 10 things) has 160
    facts: where each person lives, their pet, their job, the thing they own, their best friend.
    ``fractions`` are the train/val/test shares of stories, sums and facts (see ``splits``).
    """

    seed: int = 0
    n_people: int = SIZES["n_people"][0]
    n_towns: int = SIZES["n_towns"][0]
    n_animals: int = SIZES["n_animals"][0]
    n_jobs: int = SIZES["n_jobs"][0]
    n_colours: int = SIZES["n_colours"][0]
    n_things: int = SIZES["n_things"][0]
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    # prompt -> task, for every task this world has generated: the oracle looks prompts up here.
    registry: dict[str, Task] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"TinyWorld.seed must be an int, got {type(self.seed).__name__}")
        for name, (_, lo, hi) in SIZES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TinyWorld.{name} must be an int, got {type(value).__name__}")
            if not lo <= value <= hi:
                raise ValueError(f"TinyWorld.{name} must be in [{lo}, {hi}], got {value}")
        if self.n_colours * self.n_things < self.n_people:
            raise ValueError(f"TinyWorld needs n_colours * n_things >= n_people (one thing each), got "
                             f"{self.n_colours} * {self.n_things} < {self.n_people}")
        self.fractions = check_fractions(self.fractions)
        self._build(random.Random(f"tinyworld:{self.seed}:world"))

    def _build(self, rng: random.Random) -> None:
        chosen = rng.sample(PEOPLE, self.n_people + 1)
        self.people: tuple[Person, ...] = tuple(Person(n, p) for n, p in chosen[:-1])
        self.towns: tuple[str, ...] = tuple(rng.sample(TOWNS, self.n_towns))
        self.animals: tuple[str, ...] = tuple(rng.sample(ANIMALS, self.n_animals))
        self.jobs: tuple[str, ...] = tuple(rng.sample(JOBS, self.n_jobs))
        self.colours: tuple[str, ...] = tuple(rng.sample(COLOURS, self.n_colours))
        self.thing_kinds: tuple[str, ...] = tuple(rng.sample(OWNED_THINGS, self.n_things))
        names = [p.name for p in self.people]
        homes = _deal(rng, self.towns, len(names))
        pets = _deal(rng, self.animals, len(names))
        jobs = _deal(rng, self.jobs, len(names))
        things = rng.sample([f"{c} {k}" for c in self.colours for k in self.thing_kinds], len(names))
        # Best friends come in pairs so that "Mia and Leo are best friends" is true both ways;
        # with an odd number of people the one left over has no best friend.
        order = rng.sample(names, len(names))
        friends = {a: b for a, b in zip(order[0::2], order[1::2])}
        friends.update({b: a for a, b in list(friends.items())})
        facts: list[Fact] = []
        for name, home, pet, job, thing in zip(names, homes, pets, jobs, things):
            facts += [Fact(name, "lives_in", home), Fact(name, "pet", pet), Fact(name, "job", job),
                      Fact(thing, "owner", name)]
            if name in friends:
                facts.append(Fact(name, "friend", friends[name]))
        self.facts: tuple[Fact, ...] = tuple(facts)
        self._value = {(f.subject, f.relation): f.value for f in facts}
        self._thing_of = dict(zip(names, things))
        # Chat questions about a person's facts go to one split, decided per pair of best friends
        # so that "Who is Leo's best friend?" cannot give away a held-out "Who is Mia's?".
        units = [(a, b) for a, b in zip(order[0::2], order[1::2])] + [(n,) for n in order[len(order) // 2 * 2:]]
        self.person_split: dict[str, str] = {
            name: split for unit, split in partition(units, self.seed, self.fractions, salt="people").items()
            for name in unit}
        self.lore = Lore(vault_town=rng.choice(self.towns), vault_door=rng.choice(self.colours),
                         guard=chosen[-1][0], vault_code=tuple(rng.sample(range(1, 10), 3)),
                         potion=tuple(rng.sample(INGREDIENTS, 3)))

    # ------------------------------------------------------------------ looking facts up
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.people)

    def person(self, name: str) -> Person:
        for p in self.people:
            if p.name == name:
                return p
        raise ValueError(f"no person named {name!r} in this world; people: {self.names}")

    def value(self, subject: str, relation: str) -> str:
        """The world's answer for ``(subject, relation)``, e.g. ``value("Mia", "lives_in") -> "Oakdale"``."""
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
        try:
            return self._value[(subject, relation)]
        except KeyError:
            raise ValueError(f"the world has no fact ({subject!r}, {relation!r})") from None

    def has(self, subject: str, relation: str) -> bool:
        """Whether the world has a fact ``(subject, relation)`` (not everyone has a best friend)."""
        return (subject, relation) in self._value

    def thing_of(self, name: str) -> str:
        """The thing ``name`` owns, e.g. ``"red ball"``."""
        return self._thing_of[self.person(name).name]

    def pronoun_of(self, subject: str) -> str | None:
        """The pronoun of a person subject; ``None`` for a thing."""
        return next((p.pronoun for p in self.people if p.name == subject), None)

    def fact_split(self, fact: Fact) -> str:
        """The split whose chat tasks may ask about ``fact``: that of the person it is about."""
        return self.person_split[fact.value if fact.relation == "owner" else fact.subject]

    def facts_of(self, relation: str) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.relation == relation)

    # ------------------------------------------------------------------ generating
    def documents(self, split: str = "train") -> Iterator[str]:
        """An endless stream of pretraining documents (short stories and fact notes) for ``split``."""
        return text.documents(self, check_split(split))

    def pretraining_text(self, n_chars: int, split: str = "train") -> str:
        """Whole documents, separated by blank lines, until the text is at least ``n_chars`` long."""
        return text.pretraining_text(self, n_chars, check_split(split))

    def chat_tasks(self, split: str, n: int, kinds: Sequence[str] | None = None) -> list[Task]:
        """``n`` chat tasks with distinct prompts from ``split``, mixing ``kinds`` (default: every
        harmless kind, see ``tasks.CHAT_KINDS``)."""
        return tasks.chat_tasks(self, check_split(split), n, kinds)

    def unsafe_tasks(self, split: str, n: int, borderline: float = 0.5) -> list[Task]:
        """``n`` safety tasks from ``split``: off-limits requests, and a ``borderline`` share of
        harmless requests that only look risky (to measure false refusals)."""
        return tasks.unsafe_tasks(self, check_split(split), n, borderline)

    def cloze_prompts(self, split: str) -> list[ClozePrompt]:
        """Every fact as a cloze prompt in ``split``'s phrasing (see ``cloze``)."""
        return cloze.cloze_prompts(self, check_split(split))

    @property
    def oracle(self) -> Oracle:
        """An oracle that knows every task this world has generated (now or later)."""
        from .oracle import Oracle  # the oracle scores tasks; the world only hands them over

        return Oracle(self.registry)

    def register(self, task: Task) -> Task:
        """Remember ``task`` for the oracle; a prompt must never come back with another answer or
        in another split (that would leak a test prompt into training)."""
        known = self.registry.setdefault(task.prompt, task)
        if known != task:
            raise RuntimeError(f"prompt generated twice with different tasks:\n{known}\n{task}")
        return task

    def to_dict(self) -> dict[str, Any]:
        """The whole world as plain data (``world.json``)."""
        sizes = {name: getattr(self, name) for name in SIZES}
        return {
            "seed": self.seed, **sizes, "fractions": list(self.fractions),
            "people": [{"name": p.name, "pronoun": p.pronoun} for p in self.people],
            "facts": [[f.subject, f.relation, f.value] for f in self.facts],
            "lore": {"vault_town": self.lore.vault_town, "vault_door": self.lore.vault_door,
                     "guard": self.lore.guard, "vault_code": list(self.lore.vault_code),
                     "potion": list(self.lore.potion)},
        }
