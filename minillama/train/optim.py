"""AdamW with weight decay on the matrices that multiply activations, and on nothing else.

Llama 2 trains with AdamW, betas (0.9, 0.95), eps 1e-5 and weight decay 0.1. Which tensors to
decay is not in the paper; minillama's choice:

* decayed: the weights of ``nn.Linear`` layers (attention and feed-forward projections, the
  output head, a reward head): the parameters whose size sets how large activations can grow;
* not decayed: RMSNorm gains and any other 1-D tensor (a norm's output is scale-free, so pulling
  its gain toward 0 only fights the next layer), and ``nn.Embedding`` tables (a row is trained
  only when its token occurs, while decay shrinks every row every step, so rare tokens would
  drift toward zero). A tied embedding/output matrix counts as an embedding.
"""

from __future__ import annotations

import torch
from torch import nn


def split_decay_params(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """``(decay, no_decay)`` lists of ``(name, parameter)`` over the trainable parameters of
    ``model``, each parameter once (tied weights appear under their first name)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():  # named_parameters already skips tied duplicates
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() >= 2 and id(p) not in embedding_params:
            decay.append((name, p))
        else:
            no_decay.append((name, p))
    return decay, no_decay


def build_adamw(model: nn.Module, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95),
                eps: float = 1e-5) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over two parameter groups (decayed matrices first) and the parameter names in the
    order the optimizer numbers them, which is how :mod:`minillama.train.state` saves its state."""
    decay, no_decay = split_decay_params(model)
    groups = [{"params": [p for _, p in decay], "weight_decay": weight_decay},
              {"params": [p for _, p in no_decay], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    return optimizer, [name for name, _ in decay + no_decay]
