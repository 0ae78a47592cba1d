"""LlamaConfig: the shape of a Llama-family model, validated, with the published presets.

Field names follow Meta's reference implementation (``dim``, ``n_layers``, ``n_heads``, ...);
``rope_scaling`` follows Hugging Face's dict form so that configs travel between the two. The
config holds the architecture only: how a model runs (its attention backend, the batch limit of its
KV cache) is set on the model (:class:`minillama.model.Llama`), not here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ROPE_TYPES = ("default", "linear", "dynamic", "llama3")

# Keys each rope type needs besides "rope_type".
_ROPE_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


@dataclass
class LlamaConfig:
    """Hyper-parameters of a Llama 2 / Llama 3 model.

    ``hidden_dim`` fixes the SwiGLU width explicitly (checkpoints from elsewhere); ``None``
    derives it from ``dim``, ``ffn_dim_multiplier`` and ``multiple_of`` by Meta's rule.
    ``n_kv_heads=None`` means multi-head attention (``n_kv_heads == n_heads``); a smaller value
    gives grouped-query attention, 1 gives multi-query attention.
    """

    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None
    vocab_size: int = 2048
    multiple_of: int = 64
    ffn_dim_multiplier: float | None = None
    hidden_dim: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_seq_len: int = 256
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if isinstance(self.rope_scaling, dict):  # anything else is left for validate() to reject
            self.rope_scaling = dict(self.rope_scaling)
            # Hugging Face's older configs say "type" instead of "rope_type".
            if "rope_type" not in self.rope_scaling and "type" in self.rope_scaling:
                self.rope_scaling["rope_type"] = self.rope_scaling.pop("type")
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and its allowed values when a field is invalid."""
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                     "max_seq_len", "hidden_dim"):
            value = getattr(self, name)
            if name == "hidden_dim" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"LlamaConfig.{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"LlamaConfig.{name} must be >= 1, got {value}")
        if self.dim % self.n_heads != 0:
            raise ValueError(
                f"LlamaConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads}); "
                f"allowed n_heads: divisors of {self.dim}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"LlamaConfig.n_heads ({self.n_heads}) must be divisible by n_kv_heads "
                f"({self.n_kv_heads}); allowed n_kv_heads: divisors of {self.n_heads}")
        if self.head_dim % 2 != 0:
            raise ValueError(f"LlamaConfig head_dim = dim / n_heads = {self.head_dim} must be even for RoPE")
        if self.ffn_dim_multiplier is not None and not self.ffn_dim_multiplier > 0:
            raise ValueError(f"LlamaConfig.ffn_dim_multiplier must be None or > 0, got {self.ffn_dim_multiplier}")
        for name in ("norm_eps", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LlamaConfig.{name} must be > 0, got {getattr(self, name)}")
        self._validate_rope_scaling()

    def _validate_rope_scaling(self) -> None:
        scaling = self.rope_scaling
        if scaling is None:
            return
        if not isinstance(scaling, dict):
            raise TypeError(f"LlamaConfig.rope_scaling must be None or a dict, got {type(scaling).__name__}")
        rope_type = scaling.get("rope_type")
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"LlamaConfig.rope_scaling['rope_type'] must be one of {ROPE_TYPES}, got {rope_type!r}")
        missing = [k for k in _ROPE_REQUIRED[rope_type] if k not in scaling]
        if missing:
            raise ValueError(
                f"LlamaConfig.rope_scaling for rope_type={rope_type!r} is missing {missing}; "
                f"required keys: {list(_ROPE_REQUIRED[rope_type])}")
        if "factor" in scaling and not float(scaling["factor"]) >= 1.0:
            raise ValueError(f"LlamaConfig.rope_scaling['factor'] must be >= 1, got {scaling['factor']}")
        if rope_type == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
            raise ValueError("LlamaConfig.rope_scaling['high_freq_factor'] must be > 'low_freq_factor'")

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (1 = MHA, n_heads = MQA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else self.rope_scaling["rope_type"]

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU width: 2/3 of 4*dim (three matrices cost what two did), times the optional
        multiplier, rounded up to a multiple of ``multiple_of`` for efficient matmuls."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Exact parameter count, computed from the shapes without allocating anything."""
        d, kv = self.dim, self.n_kv_heads * self.head_dim
        attention = d * d + 2 * d * kv + d * d  # wq, wk, wv, wo
        feed_forward = 3 * d * self.ffn_hidden_dim  # w1, w2, w3
        norms = 2 * d
        per_layer = attention + feed_forward + norms
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        total = self.n_layers * per_layer + d  # + final norm
        return total + embeddings if include_embeddings else total

    # ------------------------------------------------------------------ presets and dicts
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LlamaConfig":
        """A named preset (see ``PRESETS``), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; allowed presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LlamaConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LlamaConfig fields {unknown}; allowed fields: {sorted(known)}")
        return cls(**data)


# Llama 2 shapes from the paper / Meta's params.json; Llama 3 from Meta's release.
PRESETS: dict[str, dict[str, Any]] = {
    # ~4M parameters: CPU tests, notebooks and the course pipeline.
    "tiny": dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=2048, multiple_of=64,
                 max_seq_len=256),
    # ~125M parameters at sequence 1024: a GPU-sized model.
    "small": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, vocab_size=32000, multiple_of=256,
                  max_seq_len=1024),
    "llama2-7b": dict(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, multiple_of=256,
                      norm_eps=1e-5, max_seq_len=4096),
    "llama2-13b": dict(dim=5120, n_layers=40, n_heads=40, vocab_size=32000, multiple_of=256,
                       norm_eps=1e-5, max_seq_len=4096),
    "llama2-70b": dict(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, vocab_size=32000,
                       multiple_of=4096, ffn_dim_multiplier=1.3, norm_eps=1e-5, max_seq_len=4096),
    "llama3-8b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256,
                      multiple_of=1024, ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0,
                      max_seq_len=8192),
    "llama3-70b": dict(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, vocab_size=128256,
                       multiple_of=4096, ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0,
                       max_seq_len=8192),
}
