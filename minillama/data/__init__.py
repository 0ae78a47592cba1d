"""TinyWorld: synthetic data with a ground truth, for pretraining, SFT, reward models and evaluation.

No data set can be downloaded here, and a course needs answers it can check anyway. TinyWorld
is a small seeded world (people, towns, pets, jobs, owned things, best friends, a locked vault,
a forbidden potion) that writes:

* pretraining text: short documents restating the world's facts in many phrasings, event
  stories, counting stories and sums;
* cloze prompts to test whether a model learned the facts (val/test in phrasings no text uses);
* chat tasks with reference answers, each prompt asking for a form of answer (a single word, a
  number, a full sentence, a list, yes or no first): questions about a story in the prompt, arithmetic, facts,
  simple instructions; off-limits requests whose reference is a polite refusal, and harmless
  look-alikes that measure false refusals;
* an oracle that scores any response to any of those prompts for helpfulness (content, form,
  no degeneration) and safety; simulated annotators who write uneven demonstrations.

Quick tour (run as a doctest)::

    >>> import random
    >>> from minillama.data import TinyWorld, distractors, rating_level
    >>> world = TinyWorld(seed=0)                    # sizes are arguments: TinyWorld(n_people=...)
    >>> len(world.people), len(world.facts)
    (32, 160)
    >>> text = world.pretraining_text(100_000)       # whole documents; also split="val" / "test"
    >>> len(text) >= 100_000 and text.isascii()
    True
    >>> cloze = world.cloze_prompts("test")[0]       # in a phrasing no text contains
    >>> cloze.answer in cloze.candidates and cloze.answer.startswith(" ")
    True
    >>> task = world.chat_tasks("train", 100)[0]     # Task(kind, prompt, reference, target, ...)
    >>> oracle = world.oracle                        # knows every prompt the world generated
    >>> oracle.combined(task.prompt, task.reference)
    Score(label='correct', score=1.0)
    >>> oracle.safety(task.prompt, "I'm sorry, but I can't help with that.")
    Score(label='false_refusal', score=0.5)
    >>> risky = world.unsafe_tasks("test", 10, borderline=0.0)[0]
    >>> oracle.safety(risky.prompt, risky.reference)
    Score(label='proper_refusal', score=1.0)
    >>> oracle.helpfulness(risky.prompt, risky.compliance), oracle.combined(risky.prompt, risky.compliance)
    (Score(label='correct', score=1.0), Score(label='unsafe_compliance', score=0.0))
    >>> [r.kind for r in distractors(task, random.Random(0))]
    ['wrong', 'partial', 'malformed', 'false_refusal', 'ignores_form', 'rambles']
    >>> rating_level(1.0, 0.25)
    'significantly better'

The same seed gives the same world, text and tasks, byte for byte; train, val and test never
share a prompt. On the command line: ``minillama data --out DIR --seed 0 --chars 3000000``.
Labels and scores are documented in :mod:`minillama.data.oracle`.
"""

from .cloze import ClozePrompt, cloze_prompts
from .oracle import (CONTENT_CREDIT, HELPFULNESS_LABELS, SAFETY_LABELS, SAFETY_SCORES, SAFETY_THRESHOLD, WEIGHTS,
                     Oracle, Score, combined, helpfulness, reference, safety)
from .preferences import RATING_LEVELS, Response, distractors, rating_level
from .splits import SPLITS
from .tasks import CHAT_KINDS, TASK_KINDS, Task
from .world import Fact, TinyWorld

__all__ = [
    "CHAT_KINDS", "CONTENT_CREDIT", "HELPFULNESS_LABELS", "WEIGHTS", "RATING_LEVELS", "SAFETY_LABELS", "SAFETY_SCORES",
    "SAFETY_THRESHOLD", "SPLITS", "TASK_KINDS", "ClozePrompt", "Fact", "Oracle", "Response", "Score", "Task",
    "TinyWorld", "cloze_prompts", "combined", "distractors", "helpfulness", "rating_level", "reference", "safety",
]
