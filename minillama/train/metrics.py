"""The metrics log: one JSON object per line, one line per training step or evaluation.

JSON lines survive a crash (every finished line is valid), append cheaply, and load with one
``json.loads`` per line, in Python, pandas (``read_json(lines=True)``) or ``jq``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..fileio import atomic_write


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a non-finite loss is exactly what the log must be able to record.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


class MetricsLog:
    """Append-only ``metrics.jsonl``. Each record has ``kind`` (``"train"`` or ``"val"``) and ``step``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step``: a run resumed from the checkpoint at ``step`` redoes them."""
        if not self.path.is_file():
            return
        kept = [r for r in self.read() if r["step"] <= step]
        atomic_write(self.path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept)))
