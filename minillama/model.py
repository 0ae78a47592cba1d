"""The Llama model: pre-norm decoder blocks on a token embedding, with two heads.

* :class:`Llama` puts a language-model head on the backbone: logits over the vocabulary.
* :class:`LlamaRewardModel` puts a scalar head on it and scores the last real token of each
  sequence, as the reward models of Llama 2 do.

Parameter names are Meta's (``tok_embeddings``, ``layers.N.attention.wq``, ``feed_forward.w1``,
``attention_norm``, ``ffn_norm``, ``norm``, ``output``) so that Meta checkpoints load by name;
:mod:`minillama.hf` maps them to Hugging Face's names and :mod:`minillama.checkpoint` saves and
loads model folders.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import ATTN_BACKENDS, BACKENDS, Attention, Backend, KVCache, build_attention_mask, sdpa_attention
from .config import LlamaConfig
from .mlp import SwiGLU
from .norm import RMSNorm
from .rope import RotaryEmbedding


class Block(nn.Module):
    """``x + attention(norm(x))`` then ``h + feed_forward(norm(h))``: pre-norm residual block."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config, layer_idx)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, attend: Backend = sdpa_attention) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, attend)
        return h + self.feed_forward(self.ffn_norm(h))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over real tokens only: ``(b, s) -> (b, s)``.

    With left padding the first real token gets position 0, as if the padding were not there;
    padding positions get 0 (they are never attended to)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class LlamaBackbone(nn.Module):
    """Token embedding, ``n_layers`` blocks and the final RMSNorm: ``(b, t) ids -> (b, t, c)``.

    How the model runs is set here, not in its config: ``attn_backend`` (``"eager"``, ``"sdpa"`` or
    ``"triton"``: speed, not results) and ``max_batch_size`` (the most rows a KV cache from
    :meth:`new_cache` may hold, a guard against allocating a huge cache by mistake; None: no limit).
    """

    def __init__(self, config: LlamaConfig, attn_backend: str = "sdpa", max_batch_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.rope = RotaryEmbedding(config)
        self.attn_backend, self.max_batch_size = attn_backend, max_batch_size

    @property
    def attn_backend(self) -> str:
        return self._attn_backend

    @attn_backend.setter
    def attn_backend(self, backend: str) -> None:
        if backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")
        self._attn_backend = backend

    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std) weights; the projections that write into the residual stream
        (``wo``, ``w2``) are scaled down by ``1/sqrt(2 n_layers)`` so that the stream's variance
        does not grow with depth (GPT-2's rule)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
                continue
            scale = 1 / math.sqrt(2 * self.config.n_layers) if name.endswith(("wo.weight", "w2.weight")) else 1.0
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std * scale)

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def new_cache(self, batch_size: int, max_seq_len: int | None = None) -> KVCache:
        if self.max_batch_size is not None and not 1 <= batch_size <= self.max_batch_size:
            raise ValueError(f"KVCache batch_size must be in [1, max_batch_size={self.max_batch_size}], "
                             f"got {batch_size}")
        return KVCache(self.config, batch_size, max_seq_len, device=self.device, dtype=self.dtype)

    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, start: int) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, time), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be int64 or int32, got {input_ids.dtype}")
        b, t = input_ids.shape
        if start + t > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + t} exceeds max_seq_len={self.config.max_seq_len}; "
                             f"allowed: at most max_seq_len positions (cache included)")
        if attention_mask is not None and tuple(attention_mask.shape) != (b, start + t):
            raise ValueError(f"attention_mask must be (batch, cached + new) = {(b, start + t)}, "
                             f"got {tuple(attention_mask.shape)}")
        # Ids are range-checked where a sequence starts: a decoding step feeds back tokens sampled from
        # the model's own vocabulary, and the check costs two reads from the device (which would
        # also break a torch.compile graph).
        if start == 0 and input_ids.numel() and not torch.compiler.is_compiling():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(f"token ids must be in [0, vocab_size={self.config.vocab_size}), got values in "
                                 f"[{low}, {high}]")

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """``input_ids (b, t)`` -> final normed hidden states ``(b, t, c)``.

        ``attention_mask (b, s)`` (1 = token, 0 = padding) covers the cached positions too
        (``s = cache.length + t``). ``position_ids (b, t)`` default to counting real tokens only;
        given explicitly they must lie in ``[0, max_seq_len)``.
        """
        start = 0 if cache is None else cache.length
        self._check_inputs(input_ids, attention_mask, start)
        b, t = input_ids.shape
        if cache is not None:
            cache.check(b, t)
        if position_ids is None:
            position_ids = (positions_from_mask(attention_mask)[:, start:] if attention_mask is not None
                            else torch.arange(start, start + t, device=input_ids.device).expand(b, t))
        mask = None if attention_mask is None else build_attention_mask(attention_mask, t, start + t)
        hidden = self.trunk(self.tok_embeddings(input_ids), position_ids, mask, cache)
        if cache is not None:
            cache.advance(t)
        return hidden

    def trunk(self, x: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None,
              cache: KVCache | None = None) -> torch.Tensor:
        """The blocks and the final norm on embedded tokens ``x (b, t, c)`` at ``position_ids (b, t)``
        under ``mask (b|1, 1, t, s)`` -> ``(b, t, c)``. Every forward runs through here; a compiled
        decoding step (:func:`minillama.generate.decode_step`) calls it directly, with no check
        that reads a Python number off the cache (that would recompile at every step)."""
        cos, sin = self.rope(position_ids, x.dtype)
        attend = BACKENDS[self.attn_backend]
        for block in self.layers:
            x = block(x, cos, sin, mask, cache, attend)
        return self.norm(x)


class Llama(LlamaBackbone):
    """Llama with a language-model head: ``model(input_ids) -> logits (b, t, vocab)``."""

    def __init__(self, config: LlamaConfig, seed: int | None = 0, attn_backend: str = "sdpa",
                 max_batch_size: int | None = None) -> None:
        super().__init__(config, attn_backend, max_batch_size)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.init_weights(seed)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        return self.output(self.hidden_states(input_ids, attention_mask, position_ids, cache))


class LlamaRewardModel(LlamaBackbone):
    """Llama with a scalar head: ``model(input_ids, attention_mask) -> rewards (b,)``.

    The reward is read at the last real token of each row (left or right padding both work),
    where the model has seen the whole prompt and response."""

    def __init__(self, config: LlamaConfig, seed: int | None = 0, attn_backend: str = "sdpa",
                 max_batch_size: int | None = None) -> None:
        super().__init__(config, attn_backend, max_batch_size)
        self.score = nn.Linear(config.dim, 1, bias=False)
        self.init_weights(seed)

    @classmethod
    def from_lm(cls, lm: Llama) -> "LlamaRewardModel":
        """A reward model whose backbone starts as a copy of ``lm`` (e.g. the SFT model)."""
        rm = cls(lm.config.replace(), attn_backend=lm.attn_backend, max_batch_size=lm.max_batch_size)
        missing, unexpected = rm.load_state_dict(lm.state_dict(), strict=False)
        assert set(missing) == {"score.weight"} and set(unexpected) <= {"output.weight"}, (missing, unexpected)
        nn.init.zeros_(rm.score.weight)  # every response starts at reward 0
        return rm.to(device=lm.device, dtype=lm.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.hidden_states(input_ids, attention_mask, position_ids)
        if attention_mask is None:
            last = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (attention_mask.long() * positions).argmax(-1)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.score(picked).squeeze(-1)
