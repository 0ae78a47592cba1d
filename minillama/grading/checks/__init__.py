"""Chapter checks: one module per chapter, registered in :data:`CHAPTERS`.

A chapter module (``chNN_<topic>.py``) defines ``CHECKS = Checks()`` and registers its checks
with ``@CHECKS.add(points=..., hint=...)``; see :mod:`minillama.grading.check`. The grader finds
a notebook's chapter from the two digits its file name starts with (``03_rope.ipynb`` -> ``"03"``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

from ..check import Checks

# chapter number -> module in this package. Adding a chapter's checks: write the module, add a line.
CHAPTERS: dict[str, str] = {
    "01": "ch01_tokenizer",
    "02": "ch02_rmsnorm_swiglu",
    "03": "ch03_rope",
    "04": "ch04_attention_gqa_kvcache",
    "05": "ch05_flash_attention",
    "06": "ch06_the_llama_model",
    "07": "ch07_pretraining",
    "08": "ch08_generation",
    "09": "ch09_sft",
    "10": "ch10_reward_models",
    "11": "ch11_rejection_sampling",
    "12": "ch12_dpo",
}

_CHAPTER_PREFIX = re.compile(r"^(\d\d)_")


def chapter_of(path: str | Path) -> str:
    """The chapter a notebook belongs to, from its file name: ``.../03_rope.ipynb`` -> ``"03"``."""
    name = Path(path).name
    match = _CHAPTER_PREFIX.match(name)
    if match is None or match.group(1) not in CHAPTERS:
        raise ValueError(f"cannot tell the chapter of {name!r}: the file name must start with a graded "
                         f"chapter's number and an underscore; graded chapters: {sorted(CHAPTERS)}")
    return match.group(1)


def chapter_module(chapter: str) -> ModuleType:
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; graded chapters: {sorted(CHAPTERS)}")
    return importlib.import_module(f"{__name__}.{CHAPTERS[chapter]}")


def chapter_checks(chapter: str) -> Checks:
    """The registered checks of ``chapter`` (``"03"``), in the order they run."""
    return chapter_module(chapter).CHECKS
