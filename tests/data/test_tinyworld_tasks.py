"""Chat and safety tasks: every kind, right reference answers (checked by re-reading the prompt),
short prompts, reproducible, and splits that never share a prompt."""

from __future__ import annotations

import re

import pytest

from minillama.data import CHAT_KINDS, Task, TinyWorld, combined, helpfulness, safety
from minillama.data.offlimits import BORDERLINE, REFUSALS, UNSAFE
from minillama.data.splits import SPLITS
from minillama.data.tasks import SAFETY_FRACTIONS, template_splits


@pytest.fixture(scope="module")
def chat(world) -> dict[str, list[Task]]:
    return {s: world.chat_tasks(s, 1200 if s == "train" else 400) for s in SPLITS}


@pytest.fixture(scope="module")
def risky(world) -> dict[str, list[Task]]:
    return {s: world.unsafe_tasks(s, 300 if s == "train" else 120) for s in SPLITS}


def test_every_kind_is_generated_with_a_perfect_reference(chat, risky):
    tasks = [t for ts in chat.values() for t in ts] + [t for ts in risky.values() for t in ts]
    assert {t.kind for t in tasks} == set(CHAT_KINDS) | {"unsafe", "borderline"}
    for task in tasks:
        assert combined(task, task.reference).score == 1.0, task
        assert safety(task, task.reference).label == ("proper_refusal" if task.risky else "safe")
        if not task.risky:
            assert helpfulness(task, task.reference).label == "correct", task


def test_splits_never_share_a_prompt(chat, risky, world):
    for group in (chat, risky, {s: world.cloze_prompts(s) for s in SPLITS}):
        prompts = {s: {t.prompt for t in ts} for s, ts in group.items()}
        assert not prompts["train"] & prompts["val"]
        assert not prompts["train"] & prompts["test"]
        assert not prompts["val"] & prompts["test"]
    for split in SPLITS:
        assert all(t.split == split for t in chat[split] + risky[split])
        assert len({t.prompt for t in chat[split]}) == len(chat[split])  # distinct within a split too


def test_held_out_facts_people_and_stories(chat, world):
    stories = {s: {t.prompt.split("\nQuestion:")[0] for t in ts if t.prompt.startswith("Story:")}
               for s, ts in chat.items()}
    assert not stories["train"] & stories["test"]
    for split, tasks in chat.items():
        for task in tasks:
            if task.kind == "fact_qa":
                asked = [n for n in world.names if re.search(rf"\b{n}\b", task.prompt)] or \
                        [f.value for f in world.facts_of("owner") if f.subject in task.prompt]
                assert asked and all(world.person_split[n] == split for n in asked), task


def test_test_sums_are_not_in_the_training_text(chat, world):
    text = world.pretraining_text(300_000)
    stated = set(re.findall(r"(\d+) (plus|minus|times) (\d+) (?:is|makes|equals)", text))
    asked = {m.groups() for t in chat["test"] if t.kind == "arithmetic"
             for m in [re.search(r"(\d+) (plus|minus|times) (\d+)", t.prompt)] if m}
    assert asked and not asked & stated


def test_same_seed_same_tasks():
    a = [t.to_dict() for t in TinyWorld(seed=7).chat_tasks("val", 200)]
    b = [t.to_dict() for t in TinyWorld(seed=7).chat_tasks("val", 200)]
    c = [t.to_dict() for t in TinyWorld(seed=8).chat_tasks("val", 200)]
    assert a == b and a != c
    assert TinyWorld(seed=7).unsafe_tasks("test", 50) == TinyWorld(seed=7).unsafe_tasks("test", 50)


def test_tasks_are_short(chat, risky):
    for task in [t for ts in chat.values() for t in ts] + [t for ts in risky.values() for t in ts]:
        # ~4 characters a token for a 2k BPE on this text: 400 characters is ~100 tokens.
        assert len(task.prompt) + max(len(task.reference), len(task.compliance)) <= 400, task
        assert task.prompt.isascii() and task.reference.isascii()


def test_json_round_trip(chat, risky):
    for task in chat["val"] + risky["val"]:
        assert Task.from_dict(task.to_dict()) == task
    assert chat["val"][0].to_dict()["candidates"] in ("@names", "@colours", "@spots", "@story_things", "@towns",
                                                      "@animals", "@jobs") or chat["val"][0].candidates == ()


# ---------------------------------------------------------------------------------- re-reading answers
def _replay(story: str) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str, str]]]:
    """An independent reading of an event story: who holds what, who is where, who gave what."""
    holder, place, gifts = {}, {}, []
    for sentence in re.split(r"(?<=\.) ", story):
        if m := re.fullmatch(r"([A-Z][a-z]+) was at the ([a-z]+)\.", sentence):
            place[m[1]] = m[2]
        elif m := re.fullmatch(r"([A-Z][a-z]+) had an? ([a-z ]+)\.", sentence):
            holder[m[2]] = m[1]
        elif m := re.fullmatch(r"(?:Then )?([A-Z][a-z]+) (?:went|walked|ran) to the ([a-z]+)\.", sentence):
            place[m[1]] = m[2]
        elif m := re.fullmatch(r"(?:Then )?([A-Z][a-z]+) (?:gave|handed) the ([a-z ]+) to ([A-Z][a-z]+)\.", sentence):
            assert holder[m[2]] == m[1], sentence  # only the holder can give a thing away
            holder[m[2]] = m[3]
            gifts.append((m[1], m[2], m[3]))
        else:
            raise AssertionError(f"unexpected sentence {sentence!r}")
    return holder, place, gifts


def _count(story: str) -> int:
    n = int(re.match(r"[A-Z][a-z]+ had (\d+) ", story)[1])
    for k in re.findall(r"(?:found|bought) (\d+)|[A-Z][a-z]+ gave [A-Z][a-z]+ (\d+)", story):
        n += int(k[0] or k[1])
    for k in re.findall(r"(?:ate|lost) (\d+)|gave (\d+) [a-z]+ to", story):
        n -= int(k[0] or k[1])
    return n


def test_story_answers_match_an_independent_reading(chat):
    seen = set()
    for task in [t for ts in chat.values() for t in ts]:
        if task.kind not in ("story_qa", "story_count", "list"):
            continue
        story, question = task.prompt.split("\nStory: ")[1].split("\nQuestion: ")  # after the form instruction
        if task.kind == "story_count":
            assert task.target == (str(_count(story)),), task
            seen.add("count")
            continue
        holder, place, gifts = _replay(story)
        if m := re.fullmatch(r"Who has the ([a-z ]+) now\?", question):
            assert task.target == (holder[m[1]],)
            seen.add("holder")
        elif m := re.fullmatch(r"Where is ([A-Z][a-z]+) now\?", question):
            assert task.target == (place[m[1]],)
            seen.add("place")
        elif m := re.fullmatch(r"What did ([A-Z][a-z]+) give to ([A-Z][a-z]+)\?", question):
            assert [t for g, t, r in gifts if (g, r) == (m[1], m[2])] in ([task.target[0]], [task.target[0]] * 2,
                                                                          [task.target[0]] * 3)
            seen.add("gift")
        elif "colours" in question:
            colours = list(dict.fromkeys(re.findall(r"had an? ([a-z]+) [a-z]+\.", story)))
            assert list(task.target) == colours
            seen.add("colours")
        else:
            assert list(task.target) == list(dict.fromkeys(re.findall(r"([A-Z][a-z]+) was at the", story)))
            seen.add("names")
    assert seen == {"count", "holder", "place", "gift", "colours", "names"}


def test_arithmetic_sort_and_repeat_answers(chat):
    for task in chat["train"]:
        if task.kind == "arithmetic" and (m := re.search(r"(\d+) (plus|minus|times) (\d+)", task.prompt)):
            a, op, b = int(m[1]), m[2], int(m[3])
            assert int(task.target[0]) == {"plus": a + b, "minus": a - b, "times": a * b}[op]
        elif task.kind == "sort":
            numbers = [int(x) for x in task.prompt.split(":")[1].split(". ")[0].strip(" .").split(", ")]
            assert [int(x) for x in task.target] == sorted(numbers, reverse="largest first" in task.prompt
                                                           or "largest to smallest" in task.prompt)
        elif task.kind == "repeat":
            word, count = re.search(r"(?:word )?([a-z]+) (two|three|four|five) times", task.prompt).groups()
            assert task.target == (word,) * ("two three four five".split().index(count) + 2)


# ---------------------------------------------------------------------------------- safety tasks
def _template_of(prompt: str, templates: list[str]) -> int:
    hits = [i for i, t in enumerate(templates)
            if re.search(re.sub(r"\\\{[a-z0-9]+\\\}", ".+?", re.escape(t)), prompt)]
    assert len(hits) == 1, (prompt, hits)
    return hits[0]


def test_safety_tasks_use_only_their_splits_phrasings(risky):
    splits = template_splits(0, SAFETY_FRACTIONS)
    borderline = [b[0] for b in BORDERLINE]
    for split, tasks in risky.items():
        assert {t.kind for t in tasks} == {"unsafe", "borderline"}
        for task in tasks:
            if task.kind == "unsafe":
                assert task.reference in REFUSALS and task.risky and task.compliance
                family = next(f for f, ts in UNSAFE.items() if any(
                    re.search(re.sub(r"\\\{[a-z0-9]+\\\}", ".+?", re.escape(t)), task.prompt) for t in ts))
                assert splits[(family, _template_of(task.prompt, list(UNSAFE[family])))] == split
            else:
                assert not task.risky and task.reference not in REFUSALS
                assert splits[("borderline", _template_of(task.prompt, borderline))] == split


def test_borderline_share(world):
    tasks = world.unsafe_tasks("train", 400, borderline=0.25)
    assert 0.15 < sum(t.kind == "borderline" for t in tasks) / 400 < 0.35
    assert all(t.kind == "unsafe" for t in world.unsafe_tasks("train", 50, borderline=0.0))


def test_bad_requests_raise(world):
    with pytest.raises(ValueError, match="kinds"):
        world.chat_tasks("train", 5, kinds=["unsafe"])
    with pytest.raises(ValueError, match="n must be"):
        world.chat_tasks("train", -1)
    with pytest.raises(ValueError, match="split"):
        world.chat_tasks("dev", 5)
    with pytest.raises(ValueError, match="borderline"):
        world.unsafe_tasks("train", 5, borderline=1.5)
    with pytest.raises(ValueError, match="only .* distinct"):
        world.chat_tasks("test", 10_000, kinds=["fact_qa"])
    with pytest.raises(ValueError, match="Task.kind"):
        Task("poem", "Write a poem.", "Roses.", ("roses",))


def test_a_prompt_cannot_come_back_with_another_answer(world):
    task = world.chat_tasks("val", 1, kinds=["arithmetic"])[0]
    world.register(task)  # the same task again is fine
    with pytest.raises(RuntimeError, match="different tasks"):
        world.register(Task(task.kind, task.prompt, "It is 99.", ("99",), split=task.split))
