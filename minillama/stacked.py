"""Weights of several linear layers stacked into one, for inference.

Decoding pushes one token per row through the model, and a small model then spends its time on
the number of operations rather than on their size: one matmul against ``wq|wk|wv`` costs about
what one of the three does. Only that step reads the stacked copy (made once, rebuilt when a
weight changes). Everything else keeps the separate layers: training (their gradients stay
separate, nothing is copied), and every full-sequence forward, so that a model gives bit-for-bit
the same outputs with and without gradients (DPO's frozen reference starts exactly equal to the
policy). A stacked matmul rounds a little differently from three separate ones.
"""

from __future__ import annotations

import torch
from torch import nn


def decoding_step(x: torch.Tensor) -> bool:
    """``x (b, t, c)`` is one new token per row with no gradient wanted: the case worth stacking for."""
    return x.dim() == 3 and x.shape[1] == 1 and not torch.is_grad_enabled()


class StackedWeights:
    """``stacked(*layers) -> (sum of out_features, in_features)``: the layers' weights concatenated
    along the output axis. The copy is kept and reused while every weight is the same tensor with
    the same version counter (an optimizer step, ``load_state_dict`` or ``.to()`` makes a new one)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._weight: torch.Tensor | None = None

    def __call__(self, *layers: nn.Linear) -> torch.Tensor:
        weights = [layer.weight for layer in layers]
        key = tuple((w.data_ptr(), w._version, w.device, w.dtype, tuple(w.shape)) for w in weights)
        if key != self._key:
            self._weight, self._key = torch.cat(weights).detach(), key
        return self._weight
