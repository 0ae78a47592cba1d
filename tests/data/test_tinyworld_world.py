"""The world itself: its words, its facts, its sizes, its determinism."""

from __future__ import annotations

import itertools
import json

import pytest

from minillama.data import TinyWorld
from minillama.data.lexicon import ANIMALS, JOBS, OWNED_THINGS, WORD_LISTS
from minillama.data.phrasings import RELATIONS
from minillama.data.splits import SPLITS


def test_word_lists_are_disjoint_ascii_and_read_well():
    for (a, xs), (b, ys) in itertools.combinations(WORD_LISTS.items(), 2):
        common = {x.lower() for x in xs} & {y.lower() for y in ys}
        assert not common, f"{a} and {b} share {common}"
    for name, xs in WORD_LISTS.items():
        assert len(set(xs)) == len(xs), name
        assert all(x.isascii() and x.isalpha() for x in xs), name
    assert not [n for n in WORD_LISTS["names"] if n.endswith("s")]  # "Mia's" is always a possessive
    assert not [w for w in ANIMALS + JOBS + OWNED_THINGS if w[0] in "aeiou"]  # "a dog", never "a owl"


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = TinyWorld(seed=3), TinyWorld(seed=3), TinyWorld(seed=4)
    assert a.to_dict() == b.to_dict()
    assert a.facts != c.facts


def test_default_world_has_a_few_hundred_consistent_facts(world):
    assert 100 <= len(world.facts) <= 300
    for relation in ("lives_in", "pet", "job"):
        subjects = [f.subject for f in world.facts_of(relation)]
        assert sorted(subjects) == sorted(world.names)  # exactly one each
    owners = [f.value for f in world.facts_of("owner")]
    assert sorted(owners) == sorted(world.names)
    assert len({f.subject for f in world.facts_of("owner")}) == len(world.names)  # no thing has two owners
    for f in world.facts_of("friend"):
        assert f.value != f.subject and world.value(f.value, "friend") == f.subject
    assert {f.relation for f in world.facts} == set(RELATIONS)
    assert world.lore.guard not in world.names
    assert len(set(world.lore.vault_code)) == 3


def test_values_are_spread_over_the_world(world):
    homes = [f.value for f in world.facts_of("lives_in")]
    counts = [homes.count(t) for t in world.towns]
    assert max(counts) - min(counts) <= 1  # dealt evenly: no town is everybody's answer


def test_sizes_are_configurable():
    small = TinyWorld(seed=1, n_people=7, n_towns=3, n_animals=3, n_jobs=3, n_colours=3, n_things=3)
    assert len(small.people) == 7 and len(small.towns) == 3
    assert {f.value for f in small.facts_of("lives_in")} <= set(small.towns)
    assert len(small.facts_of("friend")) == 6  # three pairs; the seventh person has no best friend
    assert len(small.facts) == 7 * 4 + 6


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(n_people=2), ValueError, "n_people"),
    (dict(n_towns=99), ValueError, "n_towns"),
    (dict(n_jobs=3.0), TypeError, "n_jobs"),
    (dict(seed="0"), TypeError, "seed"),
    (dict(n_people=20, n_colours=3, n_things=3), ValueError, "n_colours * n_things"),
    (dict(fractions=(0.5, 0.5, 0.0)), ValueError, "fractions"),
])
def test_invalid_arguments_name_the_field(kwargs, error, words):
    with pytest.raises(error, match=words.replace("*", r"\*")):
        TinyWorld(**kwargs)


def test_value_lookup(world):
    fact = world.facts[0]
    assert world.value(fact.subject, fact.relation) == fact.value
    with pytest.raises(ValueError, match="relation"):
        world.value(fact.subject, "likes")
    with pytest.raises(ValueError, match="no fact"):
        world.value("Nobody", "pet")
    with pytest.raises(ValueError, match="no person"):
        world.person("Nobody")


def test_people_are_split_with_their_best_friends(world):
    assert set(world.person_split.values()) == set(SPLITS)
    for f in world.facts_of("friend"):
        assert world.person_split[f.subject] == world.person_split[f.value]
    for f in world.facts:
        about = f.value if f.relation == "owner" else f.subject
        assert world.fact_split(f) == world.person_split[about]


def test_to_dict_is_json(world):
    data = json.loads(json.dumps(world.to_dict()))
    assert len(data["facts"]) == len(world.facts)
    assert data["lore"]["vault_code"] == list(world.lore.vault_code)


def test_the_package_docstring_tour_runs():
    import doctest

    import minillama.data

    result = doctest.testmod(minillama.data)
    assert result.attempted > 10 and result.failed == 0
