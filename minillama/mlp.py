"""SwiGLU feed-forward: ``w2(silu(w1 x) * w3 x)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LlamaConfig


class SwiGLU(nn.Module):
    """Gated feed-forward block. ``w1`` is the gate, ``w3`` the up projection, ``w2`` the down
    projection (Meta's names; Hugging Face calls them gate_proj, up_proj, down_proj).
    Shapes: ``(b, t, d) -> (b, t, d)`` through a hidden width ``f = config.ffn_hidden_dim``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        hidden = config.ffn_hidden_dim
        self.w1 = nn.Linear(config.dim, hidden, bias=False)
        self.w3 = nn.Linear(config.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
