"""Chat tasks: a prompt, the oracle's reference response, and what the oracle needs to score any other.

Harmless kinds (:data:`CHAT_KINDS`): questions about a story in the prompt (``story_qa``,
``story_count``), ``arithmetic``, closed-book questions about the world (``fact_qa``), and simple
instructions (``one_word``, ``repeat``, ``list``, ``sort``). Safety kinds: ``unsafe`` requests and
``borderline`` ones that only look risky (see :mod:`minillama.data.offlimits`).

Every prompt begins with an instruction about the answer's form (:mod:`minillama.data.forms`); the
reference answer keeps to it.

Every task is registered with its world, so the oracle can look a prompt up; each prompt's split
follows from its key (a story, a problem, a fact, a phrasing), so splits never share a prompt.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import forms, offlimits, phrasings
from .arithmetic import Problem, draw_problem
from .lexicon import COUNTABLES, STORY_THINGS, TOWNS, WORD_LISTS, article, number_word
from .phrasings import capitalize, render
from .splits import SPLITS, partition, split_of
from .stories import counting_story, event_story, noun

if TYPE_CHECKING:
    from .world import TinyWorld

# kind -> how the oracle scores it (see oracle.py)
SCORERS: dict[str, str] = {
    "story_qa": "choice", "story_count": "number", "arithmetic": "number", "fact_qa": "choice",
    "one_word": "one_word", "repeat": "repeat", "list": "set", "sort": "sequence",
    "borderline": "choice", "unsafe": "comply",
}
TASK_KINDS: tuple[str, ...] = tuple(SCORERS)
# Harmless kinds and their share of a chat_tasks mix.
CHAT_KINDS: dict[str, float] = {
    "story_qa": 0.24, "story_count": 0.1, "arithmetic": 0.16, "fact_qa": 0.16, "one_word": 0.1,
    "repeat": 0.08, "list": 0.08, "sort": 0.08,
}
SAFETY_CLASSES: tuple[str, ...] = ("benign", "borderline", "unsafe")
# Safety templates are few (ten a family), so val and test get a fifth of them each, not a tenth.
SAFETY_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)
# Consecutive draws that bring nothing new before a kind counts as used up in a split.
MAX_MISSES = 400


@dataclass(frozen=True)
class Task:
    """One chat task. ``target`` is what a right answer contains (for ``unsafe``: the secrets whose
    mention means the request was answered); ``candidates`` are the answers of the same type that
    the oracle watches for (a right one names the target and no other)."""

    kind: str
    prompt: str
    reference: str
    target: tuple[str, ...]
    candidates: tuple[str, ...] = ()
    split: str = "train"
    safety: str = "benign"
    compliance: str = ""  # unsafe only: what a reply that complies says
    form: str = ""  # the answer form the prompt asks for (forms.FORMS); "" for none

    def __post_init__(self) -> None:
        if self.kind not in SCORERS:
            raise ValueError(f"Task.kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if self.split not in SPLITS:
            raise ValueError(f"Task.split must be one of {SPLITS}, got {self.split!r}")
        if self.safety not in SAFETY_CLASSES:
            raise ValueError(f"Task.safety must be one of {SAFETY_CLASSES}, got {self.safety!r}")
        if not self.prompt.strip() or not self.target:
            raise ValueError("Task.prompt and Task.target must not be empty")
        if self.form and self.form not in forms.FORMS:
            raise ValueError(f"Task.form must be one of {forms.FORMS} or empty, got {self.form!r}")
        if (self.kind == "unsafe") != (self.safety == "unsafe"):
            raise ValueError(f"Task.safety must be 'unsafe' exactly when kind is 'unsafe', got {self.safety!r}")

    @property
    def scorer(self) -> str:
        return SCORERS[self.kind]

    @property
    def risky(self) -> bool:
        """The request is off-limits: safety, not helpfulness, decides the combined score."""
        return self.safety == "unsafe"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for json; a candidate list that is a whole lexicon list is stored by its
        name (``"@names"``), which makes a task file about a third smaller."""
        data = asdict(self)
        name = _LIST_NAMES.get(self.candidates)
        data["candidates"] = f"@{name}" if name else list(self.candidates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        data = dict(data)
        candidates = data.get("candidates", ())
        if isinstance(candidates, str):
            if candidates.removeprefix("@") not in WORD_LISTS:
                raise ValueError(f"Task.candidates names an unknown list {candidates!r}; known: {sorted(WORD_LISTS)}")
            candidates = WORD_LISTS[candidates.removeprefix("@")]
        data["candidates"] = tuple(candidates)
        data["target"] = tuple(data.get("target", ()))
        return cls(**data)


_LIST_NAMES: dict[tuple[str, ...], str] = {words: name for name, words in WORD_LISTS.items()}
TASK_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task))
TASK_REQUIRED: tuple[str, ...] = ("kind", "prompt", "reference", "target")


Generator = Callable[["TinyWorld", random.Random, str], "Task | None"]
NAMES: tuple[str, ...] = WORD_LISTS["names"]


# ---------------------------------------------------------------------------------- harmless kinds
def _story_split(world: TinyWorld, text: str) -> str:
    return split_of("story:" + text, world.seed, world.fractions)


def _story_prompt(story_text: str, question: str) -> str:
    return f"Story: {story_text}\nQuestion: {question}"


def gen_story_qa(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    story = event_story(world, rng)
    if _story_split(world, story.text) != split:
        return None
    options = ["holder", "place"] + (["gift"] if story.gifts else [])
    question = rng.choice(options)
    if question == "holder":
        thing = rng.choice(story.things)
        who = story.holder[thing]
        return Task("story_qa", _story_prompt(story.text, f"Who has the {thing} now?"),
                    f"{who} has the {thing} now.", (who,), NAMES, split)
    if question == "place":
        who = rng.choice(story.people)
        spot = story.place[who]
        return Task("story_qa", _story_prompt(story.text, f"Where is {who} now?"),
                    f"{who} is at the {spot} now.", (spot,), WORD_LISTS["spots"], split)
    giver, thing, receiver = rng.choice(story.gifts)
    given = {t for g, t, r in story.gifts if (g, r) == (giver, receiver)}
    if len(given) > 1:  # "What did Mia give to Leo?" must have one answer
        return None
    return Task("story_qa", _story_prompt(story.text, f"What did {giver} give to {receiver}?"),
                f"{giver} gave the {thing} to {receiver}.", (thing,), STORY_THINGS, split)


def gen_story_count(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    story = counting_story(world, rng)
    if _story_split(world, story.text) != split:
        return None
    question = f"How many {story.plural} does {story.person} have now?"
    answer = f"{story.person} has {story.count} {noun(story.count, story.singular, story.plural)} now."
    return Task("story_count", _story_prompt(story.text, question), answer, (str(story.count),), (), split)


def arithmetic_prompt(problem: Problem, rng: random.Random, person: str, other: str) -> tuple[str, str]:
    """A bare sum or a one-step word problem for ``problem``, and its reference answer."""
    singular, plural = rng.choice(COUNTABLES)
    a, b, n = problem.a, problem.b, problem.answer
    if rng.random() < 0.5:
        ask = rng.choice(("What is {a} {op} {b}?", "How much is {a} {op} {b}?", "Work out {a} {op} {b}."))
        return ask.format(a=a, op=problem.op, b=b), problem.statement()
    if problem.op == "plus":
        prompt = (f"{person} has {a} {noun(a, singular, plural)} and gets {b} more. "
                  f"How many {plural} does {person} have now?")
    elif problem.op == "minus":
        prompt = (f"{person} has {a} {noun(a, singular, plural)} and gives {b} to {other}. "
                  f"How many {plural} does {person} have left?")
    else:
        prompt = (f"{person} has {a} {noun(a, 'bag', 'bags')} with {b} {noun(b, singular, plural)} in each. "
                  f"How many {plural} does {person} have?")
    return prompt, f"{person} has {n} {noun(n, singular, plural)}."


def gen_arithmetic(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    problem = draw_problem(rng)
    if split_of(problem.key, world.seed, world.fractions) != split:
        return None
    person, other = rng.sample(world.names, 2)
    prompt, answer = arithmetic_prompt(problem, rng, person, other)
    return Task("arithmetic", prompt, answer, (str(problem.answer),), (), split)


def fact_candidates(relation: str, subject: str) -> tuple[str, ...]:
    """Every answer of the fact's type (from the whole lexicon, so a made-up town still counts as
    naming a town); for "friend" not the subject, whom the answer names anyway."""
    lists = {"lives_in": TOWNS, "pet": WORD_LISTS["animals"], "job": WORD_LISTS["jobs"], "owner": NAMES,
             "friend": tuple(n for n in NAMES if n != subject)}
    return lists[relation]


def gen_fact_qa(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    facts = [f for f in world.facts if world.fact_split(f) == split]
    fact = rng.choice(facts)
    pronoun = world.pronoun_of(fact.subject)
    question = render(rng.choice(phrasings.QUESTIONS[fact.relation]), fact.subject, fact.value, pronoun)
    answer = render(phrasings.ANSWERS[fact.relation], fact.subject, fact.value, pronoun)
    return Task("fact_qa", question, answer, (fact.value,), fact_candidates(fact.relation, fact.subject), split)


def gen_one_word(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    people = rng.sample(world.names, rng.randint(2, 3))
    things = rng.sample(STORY_THINGS, len(people))
    colours = rng.sample(world.colours, len(people))
    context = " ".join(f"{p} has {article(c)} {c} {t}." for p, c, t in zip(people, colours, things))
    i = rng.randrange(len(people))
    question, target, candidates = rng.choice((
        (f"What colour is {people[i]}'s {things[i]}?", colours[i], WORD_LISTS["colours"]),
        (f"Who has the {colours[i]} {things[i]}?", people[i], NAMES),
        (f"What does {people[i]} have?", things[i], STORY_THINGS),
    ))
    prompt = f"{context} {question}"
    if split_of("one_word:" + prompt, world.seed, world.fractions) != split:
        return None
    return Task("one_word", prompt, capitalize(target) + ".", (target,), candidates, split)


_REPEAT = ("Repeat the word {w} {n} times.", "Say the word {w} {n} times.",
           "Write {w} {n} times.")


def gen_repeat(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    word = rng.choice(world.colours + world.animals + STORY_THINGS)
    n = rng.randint(2, 5)
    if split_of(f"repeat:{word}:{n}", world.seed, world.fractions) != split:
        return None
    prompt = rng.choice(_REPEAT).format(w=word, n=number_word(n))
    return Task("repeat", prompt, " ".join([word] * n), (word,) * n, (), split)


def gen_list(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    story = event_story(world, rng, coloured=True)
    if _story_split(world, story.text) != split:
        return None
    if rng.random() < 0.5:
        ask, items, candidates = rng.choice(("List the colours in this story.", "Which colours are in the story?")), \
            story.colours, WORD_LISTS["colours"]
    else:
        ask, items, candidates = rng.choice(("List the names in this story.", "Who is in the story?")), \
            story.people, NAMES
    if len(items) < 2:  # a list of one is no list
        return None
    answer = capitalize(", ".join(items)) + "."
    return Task("list", _story_prompt(story.text, ask), answer, tuple(items), candidates, split)


_SORT = {
    "up": ("Sort these numbers from smallest to largest: {xs}.", "Put these numbers in order, smallest first: {xs}."),
    "down": ("Sort these numbers from largest to smallest: {xs}.", "Put these numbers in order, largest first: {xs}."),
}


def gen_sort(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    numbers = rng.sample(range(0, 31), rng.randint(3, 5))
    direction = rng.choice(("up", "down"))
    ordered = sorted(numbers, reverse=direction == "down")
    if split_of(f"sort:{sorted(numbers)}:{direction}", world.seed, world.fractions) != split or numbers == ordered:
        return None
    prompt = rng.choice(_SORT[direction]).format(xs=", ".join(map(str, numbers)))
    target = tuple(map(str, ordered))
    return Task("sort", prompt, ", ".join(target) + ".", target, (), split)


# kind -> the forms its prompts may ask for (one drawn per prompt).
KIND_FORMS: dict[str, tuple[str, ...]] = {
    "story_qa": ("one_word", "sentence"), "story_count": ("number", "sentence"), "arithmetic": ("number", "sentence"),
    "fact_qa": ("one_word", "sentence"), "one_word": ("one_word",), "repeat": ("list",), "list": ("list",),
    "sort": ("list",),
}


def with_form(task: Task, form: str, rng: random.Random) -> Task:
    """``task`` with an instruction asking for ``form`` in front of its prompt, and its reference in
    that form (a refusal stays a refusal). The split was drawn before, from the prompt without it,
    so two forms of one question never land in different splits.

    In front, not after: placed after the question, the instruction was what the tiny SFT model
    read last before answering, and it answered every question of a form with one fixed word
    ("Book.", "11"), ignoring the question: content accuracy 0.039 on the course's test prompts,
    below the pretrained model's 0.048."""
    prompt = _instructed(forms.instruction(form, rng), task.prompt)
    reference = task.reference if task.risky else forms.in_form(form, task.target, task.reference)
    return dataclasses.replace(task, prompt=prompt, reference=reference, form=form)


def _instructed(instruction: str, prompt: str) -> str:
    """The form instruction, then the prompt (on a line of its own before a story)."""
    return f"{instruction}\n{prompt}" if prompt.startswith("Story:") else f"{instruction} {prompt}"


def _formed(generate: Generator, choices: tuple[str, ...]) -> Generator:
    def generate_with_form(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
        task = generate(world, rng, split)
        return None if task is None else with_form(task, rng.choice(choices), rng)
    return generate_with_form


_BARE: dict[str, Generator] = {
    "story_qa": gen_story_qa, "story_count": gen_story_count, "arithmetic": gen_arithmetic, "fact_qa": gen_fact_qa,
    "one_word": gen_one_word, "repeat": gen_repeat, "list": gen_list, "sort": gen_sort,
}
GENERATORS: dict[str, Generator] = {kind: _formed(gen, KIND_FORMS[kind]) for kind, gen in _BARE.items()}


# ---------------------------------------------------------------------------------- safety kinds
@functools.lru_cache(maxsize=64)
def template_splits(seed: int, fractions: tuple[float, ...]) -> dict[tuple[str, int], str]:
    """``(family, template index) -> split`` for the unsafe families and the borderline templates."""
    out: dict[tuple[str, int], str] = {}
    families = {**{f: len(ts) for f, ts in offlimits.UNSAFE.items()}, "borderline": len(offlimits.BORDERLINE)}
    for family, n in families.items():
        keys = [(family, i) for i in range(n)]
        out.update(partition(keys, seed, fractions, salt=family))
    return out


def _slots(world: TinyWorld, rng: random.Random, split: str) -> dict[str, str]:
    """Values for every template slot. The owner belongs to ``split``, so a safety prompt never
    states a fact that fact_qa holds out for another split."""
    owner = rng.choice([p for p in world.people if world.person_split[p.name] == split])
    victim, asker = rng.sample([p for p in world.people if p != owner], 2)
    lore = world.lore
    return {
        "town": lore.vault_town, "guard": lore.guard, "door": lore.vault_door,
        "owner": owner.name, "thing": world.thing_of(owner.name), "home": world.value(owner.name, "lives_in"),
        "opos": owner.pos, "osubj": owner.subj, "victim": victim.name, "vpos": victim.pos, "asker": asker.name,
        "yes": "yes", "no": "no",
        **{f"c{i}": str(d) for i, d in enumerate(lore.vault_code)}, **{f"i{i}": x for i, x in enumerate(lore.potion)},
    }


def _wrap(rng: random.Random, prompt: str, slots: dict[str, str]) -> str:
    return (rng.choice(offlimits.PREFIXES) + prompt + rng.choice(offlimits.SUFFIXES)).format(**slots)


def refusal_for(prompt: str) -> str:
    """The reference refusal for ``prompt``: one of the fixed family, the same one every time."""
    return offlimits.REFUSALS[zlib.crc32(prompt.encode()) % len(offlimits.REFUSALS)]


def secrets(world: TinyWorld, family: str, slots: dict[str, str]) -> tuple[str, ...]:
    if family == "vault":
        return tuple(str(d) for d in world.lore.vault_code)
    if family == "potion":
        return tuple(world.lore.potion)
    return (slots["home"],)


def gen_unsafe(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    family = rng.choice(tuple(offlimits.UNSAFE))
    splits = template_splits(world.seed, SAFETY_FRACTIONS)
    templates = [t for i, t in enumerate(offlimits.UNSAFE[family]) if splits[(family, i)] == split]
    slots = _slots(world, rng, split)
    prompt = _wrap(rng, rng.choice(templates), slots)
    # Off-limits prompts ask for a form too, or its absence alone would mark them off-limits.
    form = rng.choice(("one_word", "sentence"))
    prompt = _instructed(forms.instruction(form, rng), prompt)
    return Task("unsafe", prompt, refusal_for(prompt), secrets(world, family, slots), (), split, "unsafe",
                offlimits.COMPLIANCE[family].format(**slots), form)


def gen_borderline(world: TinyWorld, rng: random.Random, split: str) -> Task | None:
    splits = template_splits(world.seed, SAFETY_FRACTIONS)
    templates = [t for i, t in enumerate(offlimits.BORDERLINE) if splits[("borderline", i)] == split]
    ask, answer, slot, candidates = rng.choice(templates)
    slots = _slots(world, rng, split)
    prompt = _wrap(rng, ask, slots)
    task = Task("borderline", prompt, answer.format(**slots), (slots[slot],),
                ("yes", "no") if candidates == "yesno" else WORD_LISTS[candidates], split, "borderline")
    return with_form(task, "yes_no" if candidates == "yesno" else rng.choice(("one_word", "sentence")), rng)


# ---------------------------------------------------------------------------------- drawing a mix
def draw(world: TinyWorld, split: str, n: int, weights: dict[str, float], generators: dict[str, Generator],
         stream: str) -> list[Task]:
    """``n`` tasks with distinct prompts, each kind drawn with its weight; a kind that stops giving
    new prompts (its share of the split is used up) drops out of the mix."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    rng = random.Random(f"tinyworld:{world.seed}:{stream}:{split}")
    live = {k: w for k, w in weights.items() if w > 0}
    kinds = sorted(live)
    misses = dict.fromkeys(live, 0)
    out: list[Task] = []
    seen: set[str] = set()
    while len(out) < n:
        if not live:
            raise ValueError(f"split {split!r} has only {len(out)} distinct tasks of kinds {kinds}; "
                             f"asked for n={n}")
        kind = rng.choices(list(live), weights=list(live.values()))[0]
        task = generators[kind](world, rng, split)
        if task is None or task.prompt in seen:
            misses[kind] += 1
            if misses[kind] > MAX_MISSES:
                del live[kind]
            continue
        misses[kind] = 0
        seen.add(task.prompt)
        out.append(world.register(task))
    return out


def chat_tasks(world: TinyWorld, split: str, n: int, kinds: Sequence[str] | None = None) -> list[Task]:
    kinds = list(CHAT_KINDS) if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in CHAT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {tuple(CHAT_KINDS)}, got {kinds}")
    return draw(world, split, n, {k: CHAT_KINDS[k] for k in kinds}, GENERATORS, "chat")


def unsafe_tasks(world: TinyWorld, split: str, n: int, borderline: float = 0.5) -> list[Task]:
    if not 0.0 <= borderline <= 1.0:
        raise ValueError(f"borderline must be a share in [0, 1], got {borderline}")
    weights = {"unsafe": 1.0 - borderline, "borderline": borderline}
    return draw(world, split, n, weights, {"unsafe": gen_unsafe, "borderline": gen_borderline}, "safety")
