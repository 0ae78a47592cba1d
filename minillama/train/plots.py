"""The loss curve: training loss per step and every validation loss, as a png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..fileio import atomic_write


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_losses(records: list[dict[str, Any]], path: str | Path, title: str = "loss", ylabel: str = "loss") -> Figure:
    """Plot ``loss`` of the ``"train"`` records and every key ending in ``loss`` of the ``"val"``
    records against ``step``; write ``path`` (png) atomically and return the figure (a notebook
    cell that ends with it displays it).

    Uses a bare :class:`~matplotlib.figure.Figure` (the Agg renderer), not pyplot: no global
    figure state, no display needed, safe in scripts, tests and notebooks alike."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    train = [r for r in records if r.get("kind") == "train" and _numeric(r.get("loss"))]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
    val = [r for r in records if r.get("kind") == "val"]
    for key in sorted({k for r in val for k in r if k.endswith("loss") and _numeric(r[k])}):
        points = [(r["step"], r[key]) for r in val if _numeric(r.get(key))]
        ax.plot(*zip(*points), "o-", ms=4, label=key.replace("_", " "))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    return fig
