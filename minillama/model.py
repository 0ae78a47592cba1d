"""The Llama model: pre-norm decoder blocks on a token embedding, with two heads.

* :class:`Llama` puts a language-model head on the backbone: logits over the vocabulary.
* :class:`LlamaRewardModel` puts a scalar head on it and scores the last real token of each
  sequence, as the reward models of Llama 2 do.

Parameter names are Meta's (``tok_embeddings``, ``layers.N.attention.wq``, ``feed_forward.w1``,
``attention_norm``, ``ffn_norm``, ``norm``, ``output``) so that Meta checkpoints load by name;
:mod:`minillama.hf` maps them to Hugging Face's names.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ATTN_BACKENDS, Attention, KVCache, build_attention_mask
from .config import LlamaConfig
from .mlp import SwiGLU
from .norm import RMSNorm
from .rope import inv_freq_for, rope_cos_sin


class Block(nn.Module):
    """``x + attention(norm(x))`` then ``h + feed_forward(norm(h))``: pre-norm residual block."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config, layer_idx)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache)
        return h + self.feed_forward(self.ffn_norm(h))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over real tokens only: ``(b, s) -> (b, s)``.

    With left padding the first real token gets position 0, as if the padding were not there;
    padding positions get 0 (they are never attended to)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class LlamaBackbone(nn.Module):
    """Token embedding, ``n_layers`` blocks and the final RMSNorm: ``(b, t) ids -> (b, t, c)``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        # RoPE tables, kept off the module so that .to(bf16) cannot round them.
        self._inv_freq: dict[tuple[str, int], torch.Tensor] = {}
        self._cos_sin: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- set-up
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

    def set_attn_backend(self, backend: str) -> None:
        """Switch every layer to ``"eager"``, ``"sdpa"`` or ``"triton"`` attention."""
        if backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")
        self.config.attn_backend = backend
        for block in self.layers:
            block.attention.backend = backend

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def new_cache(self, batch_size: int, max_seq_len: int | None = None) -> KVCache:
        return KVCache(self.config, batch_size, max_seq_len, device=self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- forward
    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      cache: KVCache | None, check_ids: bool = True) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, time), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be int64 or int32, got {input_ids.dtype}")
        b, t = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + t} exceeds max_seq_len={self.config.max_seq_len}; "
                             f"allowed: at most max_seq_len positions (cache included)")
        # The range check reads values back from the device; under torch.compile it would break the graph.
        if (check_ids and input_ids.numel() and not torch.compiler.is_compiling()
                and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size)):
            raise ValueError(f"token ids must be in [0, vocab_size={self.config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if cache is not None:
            if cache.batch_size != b:
                raise ValueError(f"KV cache was made for batch {cache.batch_size}, got batch {b}")
            cache.check_room(t)
        if attention_mask is not None and tuple(attention_mask.shape) != (b, start + t):
            raise ValueError(f"attention_mask must be (batch, cached + new) = {(b, start + t)}, "
                             f"got {tuple(attention_mask.shape)}")

    def _inv_freq_for(self, device: torch.device, seq_len: int) -> torch.Tensor:
        key = (str(device), seq_len)
        if key not in self._inv_freq:
            self._inv_freq[key] = inv_freq_for(self.config, seq_len).to(device)
        return self._inv_freq[key]

    def _rope_tables(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos, sin (b, t, d)`` for ``position_ids (b, t)``."""
        if self.config.rope_type == "dynamic":  # the frequencies depend on the sequence length
            seq_len = max(self.config.original_max_seq_len, int(position_ids.max()) + 1)
            return rope_cos_sin(self._inv_freq_for(position_ids.device, seq_len), position_ids, dtype)
        # Otherwise one table for every position, computed once: decoding then looks up one row
        # per step instead of evaluating cos and sin again.
        key = (str(position_ids.device), dtype)
        if key not in self._cos_sin:
            inv_freq = self._inv_freq_for(position_ids.device, self.config.original_max_seq_len)
            positions = torch.arange(self.config.max_seq_len, device=position_ids.device)[None]
            self._cos_sin[key] = tuple(table[0] for table in rope_cos_sin(inv_freq, positions, dtype))
        cos, sin = self._cos_sin[key]
        return cos[position_ids], sin[position_ids]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                      check_ids: bool = True) -> torch.Tensor:
        """``input_ids (b, t)`` -> final normed hidden states ``(b, t, c)``.

        ``attention_mask (b, s)`` (1 = token, 0 = padding) covers the cached positions too
        (``s = cache.length + t``). ``position_ids (b, t)`` default to counting real tokens only;
        given explicitly they must lie in ``[0, max_seq_len)``. ``check_ids=False`` skips the id
        range check (it reads from the device), for callers whose ids are in range by construction,
        such as a decoding loop feeding back sampled tokens.
        """
        self._check_inputs(input_ids, attention_mask, cache, check_ids)
        b, t = input_ids.shape
        start = cache.length if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None:
                position_ids = positions_from_mask(attention_mask)[:, start:]
            else:
                position_ids = torch.arange(start, start + t, device=input_ids.device).expand(b, t)
        mask = None if attention_mask is None else build_attention_mask(attention_mask, t, start + t)
        x = self.tok_embeddings(input_ids)
        cos, sin = self._rope_tables(position_ids, x.dtype)
        for block in self.layers:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(t)
        return self.norm(x)

    # ---------------------------------------------------------------- saving and loading
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` (Hugging Face format) and ``model.safetensors``."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory)


class Llama(LlamaBackbone):
    """Llama with a language-model head: ``model(input_ids) -> logits (b, t, vocab)``."""

    def __init__(self, config: LlamaConfig, seed: int | None = 0) -> None:
        super().__init__(config)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.init_weights(seed)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                check_ids: bool = True) -> torch.Tensor:
        return self.output(self.hidden_states(input_ids, attention_mask, position_ids, cache, check_ids))

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | None = None,
                        **config_overrides) -> "Llama":
        """Load a directory written by :meth:`save_pretrained` or by transformers'
        ``LlamaForCausalLM.save_pretrained`` (safetensors only), in its stored dtype or in ``dtype``."""
        from .checkpoint import load_pretrained

        return load_pretrained(directory, dtype, **config_overrides)


class LlamaRewardModel(LlamaBackbone):
    """Llama with a scalar head: ``model(input_ids, attention_mask) -> rewards (b,)``.

    The reward is read at the last real token of each row (left or right padding both work),
    where the model has seen the whole prompt and response."""

    def __init__(self, config: LlamaConfig, seed: int | None = 0) -> None:
        super().__init__(config)
        self.score = nn.Linear(config.dim, 1, bias=False)
        self.init_weights(seed)

    @classmethod
    def from_lm(cls, lm: Llama) -> "LlamaRewardModel":
        """A reward model whose backbone starts as a copy of ``lm`` (e.g. the SFT model)."""
        rm = cls(lm.config.replace())
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


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                   reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy: position ``i`` predicts ``labels[:, i + 1]``.

    ``logits (b, t, v)``, ``labels (b, t)`` (usually the input ids, with ``ignore_index`` where no
    loss is wanted: padding, prompt tokens). Computed in float32. ``reduction="none"`` gives the
    ``b * (t - 1)`` per-position losses."""
    # Shift the labels, not the logits: slicing (b, t, v) logits would copy them, and their gradient.
    targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)  # the last position predicts nothing
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)
    return loss.view(labels.shape)[:, :-1].reshape(-1) if reduction == "none" else loss
