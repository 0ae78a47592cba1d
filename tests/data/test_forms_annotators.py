"""Answer forms, degeneration and the simulated annotators: hand-written cases, then the rules
that tie them to the oracle (a flaw costs exactly the quality it is documented to cost)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from minillama.data import TinyWorld
from minillama.data.annotators import FLAWS, AnnotatorPool, flaw_counts
from minillama.data.forms import FORMS, break_form, degenerate, follows, in_form, instruction, ramble, sentences
from minillama.data.oracle import qualities
from minillama.stages.rejection import choose_threshold

FORM_CASES = [
    ("one_word", "Leo.", True), ("one_word", "leo", True), ("one_word", "Leo. Leo. Leo.", True),
    ("one_word", "The answer is Leo.", False), ("one_word", "12", False), ("one_word", "", False),
    ("number", "12", True), ("number", "12.", True), ("number", "Twelve.", False), ("number", "It is 12.", False),
    ("sentence", "Leo has the cup now.", True), ("sentence", "7 plus 5 is 12.", True), ("sentence", "Leo", False),
    ("sentence", "leo has the cup now.", False), ("sentence", "Leo has it", False),
    ("list", "Red, blue.", True), ("list", "2, 7, 9", True), ("list", "Red and blue.", False),
    ("list", "Red.", False), ("list", "The colours are red, blue and green.", False),
    ("yes_no", "No. It is not safe.", True), ("yes_no", "yes", True), ("yes_no", "It is not safe, so no.", False),
]


@pytest.mark.parametrize("form, response, expected", FORM_CASES)
def test_follows(form, response, expected):
    assert follows(form, response) == expected


def test_degenerate_and_sentences():
    assert sentences("Leo. Mia!  Ann? and") == ["Leo.", "Mia!", "Ann?", "and"]
    assert not degenerate("Leo has the cup now.") and not degenerate("No. It is not safe to drink.")
    assert degenerate("Leo has the cup. leo has the cup!")  # said twice, whatever the case and punctuation
    assert degenerate("Leo has it. Mia went home. Ann ate a plum.")  # a run-on past the answer
    assert degenerate(ramble("Leo."))
    with pytest.raises(ValueError, match="form must be one of"):
        follows("haiku", "Leo.")


@pytest.fixture(scope="module")
def tasks():
    world = TinyWorld(seed=5)
    return world.chat_tasks("train", 600) + world.unsafe_tasks("train", 200)


def test_every_prompt_states_its_form_and_the_reference_keeps_it(tasks):
    assert {t.form for t in tasks} == set(FORMS)
    for task in tasks:
        assert any(task.prompt.startswith(phrase) for phrase in
                   [p for form in FORMS for p in (instruction(form, random.Random(i)) for i in range(20))]), task
        if not task.risky:
            q = qualities(task, task.reference)
            assert (q.content, q.form, q.clean) == ("correct", True, True), task
            assert q.score == 1.0


def test_break_form_and_ramble_cost_one_quality_each(tasks):
    for task in (t for t in tasks if not t.risky):
        broken = qualities(task, break_form(task.form, task.target, task.reference))
        assert (broken.content, broken.form, broken.clean) == ("correct", False, True), task
        rambling = qualities(task, ramble(task.reference))
        assert (rambling.content, rambling.form, rambling.clean) == ("correct", True, False), task
        assert in_form(task.form, task.target, task.reference) == task.reference


def test_annotators_write_unevenly_in_the_documented_ways(tasks):
    pool = AnnotatorPool(uneven=0.3, seed=1)
    demos = pool.demonstrations(tasks)
    counts = flaw_counts(demos)
    harmless = sum(not t.risky for t in tasks)
    assert sum(counts.values()) == len(tasks) and set(counts) == {"none", *FLAWS}
    assert 0.2 < (len(tasks) - counts["none"]) / harmless < 0.4  # about 30% of the harmless demos are flawed
    for task, demo in zip(tasks, demos):
        q = qualities(task, demo.text)
        if task.risky or not demo.flaw:
            assert demo.text == task.reference
        elif demo.flaw == "ignores_form":
            assert (q.content, q.form, q.clean) == ("correct", False, True)
        elif demo.flaw in ("pads", "hedges"):
            assert (q.content, q.form, q.clean) == ("correct", True, False), (task, demo)
        else:
            assert demo.flaw == "over_refuses" and task.safety == "borderline" and not q.form
    assert pool.demonstrations(tasks) == demos  # seeded by the prompt: the same pool writes the same demos
    flawed_30 = {t.prompt for t, d in zip(tasks, demos) if d.flaw}
    flawed_60 = {t.prompt for t, d in zip(tasks, AnnotatorPool(0.6, seed=1).demonstrations(tasks)) if d.flaw}
    assert flawed_30 < flawed_60  # a sweep of the rate only adds flaws
    assert not any(d.flaw for d in AnnotatorPool(0.0).demonstrations(tasks))
    with pytest.raises(ValueError, match="uneven"):
        AnnotatorPool(1.5)


def test_choose_threshold_separates_good_from_bad():
    rewards = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.95])
    truth = np.array([0.0, 0.2, 0.5, 1.0, 1.0, 0.7])
    t = choose_threshold(rewards, truth)
    assert t["threshold"] == 0.8 and t["purity"] == 1.0 and t["coverage"] == 1.0 and t["kept_share"] == 0.5
    noisy = choose_threshold(np.array([0.1, 0.5, 0.6, 0.9]), np.array([1.0, 0.0, 1.0, 1.0]))
    assert noisy["threshold"] == 0.6 and noisy["purity"] == 1.0 and noisy["coverage"] == pytest.approx(2 / 3)
    assert choose_threshold(np.ones(3), np.ones(3))["kept_share"] == 1.0  # nothing to separate: keep all
    with pytest.raises(ValueError, match="same shape|one shape"):
        choose_threshold(np.ones(3), np.ones(2))
