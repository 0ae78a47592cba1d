"""Pretraining text: reproducible, consistent with the world, covering every fact, and keeping
the held-out phrasings, stories and sums out of the training text."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from minillama.data import TinyWorld
from minillama.data.arithmetic import Problem
from minillama.data.phrasings import HELD_OUT, TEXT, render
from minillama.data.splits import split_of
from minillama.data.text import DOC_SEPARATOR


@pytest.fixture(scope="module")
def train_text(world) -> str:
    return world.pretraining_text(400_000)


@pytest.fixture(scope="module")
def test_text(world) -> str:
    return world.pretraining_text(100_000, "test")


def test_same_seed_same_bytes():
    def digest(seed: int, split: str = "train") -> str:
        return hashlib.sha256(TinyWorld(seed=seed).pretraining_text(100_000, split).encode()).hexdigest()

    assert digest(0) == digest(0)
    assert digest(0) != digest(1)
    assert digest(0) != digest(0, "val")


def test_length_prefix_and_document_boundaries(world, train_text):
    short = world.pretraining_text(5_000)
    assert len(short) >= 5_000 and train_text.startswith(short)
    assert train_text[len(short):].startswith(DOC_SEPARATOR)  # it stopped at the end of a document
    assert world.pretraining_text(0) == ""
    with pytest.raises(ValueError, match="n_chars"):
        world.pretraining_text(-1)
    with pytest.raises(ValueError, match="split"):
        world.pretraining_text(10, "dev")


def test_plain_ascii_english(train_text):
    assert train_text.isascii()
    assert set(train_text) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:'-\n")
    assert "{" not in train_text and "  " not in train_text


def test_a_few_megabytes_in_seconds():
    start = time.perf_counter()
    text = TinyWorld(seed=5).pretraining_text(1_000_000)
    elapsed = time.perf_counter() - start
    assert len(text) >= 1_000_000
    assert elapsed < 5.0, f"1 MB took {elapsed:.1f} s (it takes about 0.5 s on a 2-core CPU)"


# Patterns that state a fact outright; each match must agree with the world.
_STATED = [
    (r"\b([A-Z][a-z]+) lives in ([A-Z][a-z]+)\.", "lives_in"),
    (r"\b([A-Z][a-z]+)'s pet is a ([a-z]+)\.", "pet"),
    (r"\b([A-Z][a-z]+) works as a ([a-z]+)\.", "job"),
    (r"\bThe ([a-z]+ [a-z]+) belongs to ([A-Z][a-z]+)\.", "owner"),
    (r"\b([A-Z][a-z]+)'s best friend is ([A-Z][a-z]+)\.", "friend"),
]


def test_text_never_contradicts_the_world(world, train_text):
    checked = 0
    for pattern, relation in _STATED:
        for subject, value in re.findall(pattern, train_text):
            assert world.value(subject, relation) == value, (subject, relation, value)
            checked += 1
    for names, town in re.findall(r"([A-Z][a-z]+(?:, [A-Z][a-z]+)*(?: and [A-Z][a-z]+)?) lives? in ([A-Z][a-z]+)\.",
                                  train_text):
        for name in re.split(r", | and ", names):
            assert world.value(name, "lives_in") == town
    assert checked > 500


def test_every_fact_is_stated_many_times(world, train_text):
    for fact in world.facts:
        pronoun = world.pronoun_of(fact.subject)
        count = sum(train_text.count(render(t, fact.subject, fact.value, pronoun)) for t in TEXT[fact.relation])
        assert count >= 5, f"{fact} is stated only {count} times in 400k characters"


def test_held_out_cloze_phrasings_appear_in_no_text(world, train_text, test_text):
    for split in ("val", "test"):
        for cloze in world.cloze_prompts(split):
            assert cloze.prompt not in train_text and cloze.prompt not in test_text
    for phrasings in HELD_OUT.values():
        for template in phrasings.values():
            stem = template.split("{")[0].strip()  # "The owner of the", "By trade,", ...
            if len(stem) > 3:
                assert stem not in train_text, stem


def _stories(text: str) -> set[str]:
    return {d for d in text.split(DOC_SEPARATOR) if " was at the " in d or re.match(r"[A-Z][a-z]+ had \d+ ", d)}


def _sums(text: str) -> set[tuple[str, str, str]]:
    return set(re.findall(r"(\d+) (plus|minus|times) (\d+) (?:is|makes|equals) \d+", text))


def _story_key(doc: str) -> str:
    """The story as generated, without the closing sentences a document may add."""
    sentences = re.split(r"(?<=\.) ", doc)
    while re.match(r"In the end, |Now [A-Z]|[A-Z][a-z]+ stayed at the ", sentences[-1]):
        sentences.pop()
    return "story:" + " ".join(sentences)


@pytest.mark.parametrize("split", ["train", "test"])
def test_each_texts_stories_and_sums_belong_to_its_split(world, train_text, test_text, split):
    text = train_text if split == "train" else test_text
    stories, sums = _stories(text), _sums(text)
    assert len(stories) > 20 and len(sums) > 20
    assert {split_of(_story_key(d), world.seed, world.fractions) for d in stories} == {split}
    assert {split_of(Problem(int(a), op, int(b)).key, world.seed, world.fractions) for a, op, b in sums} == {split}


def test_test_stories_and_sums_stay_out_of_the_training_text(train_text, test_text):
    assert _stories(test_text) and _sums(test_text)
    assert not _stories(test_text) & _stories(train_text)
    assert not _sums(test_text) & _sums(train_text)
