"""Rotary position embeddings (RoPE).

Each pair of features of a query/key head is rotated by an angle ``position * inv_freq[i]``;
the dot product of a rotated query and key then depends only on their distance.

Two layouts of the pairs exist. Meta's reference code rotates *interleaved* pairs
``(x0, x1), (x2, x3), ...`` as complex numbers. Hugging Face (and minillama) rotate the
*half-split* pairs ``(x_i, x_{i + d/2})`` with ``rotate_half``. They are the same rotation up to a
fixed permutation of the features, which can be folded into the rows of ``wq`` and ``wk``:
see :func:`interleaved_to_half_permutation`.

Frequency scalings for longer contexts: ``linear`` (position interpolation), ``dynamic``
(NTK-aware base growth once the sequence outgrows the original context) and ``llama3``
(per-band interpolation of Llama 3.1). :class:`RotaryEmbedding` owns a model's tables and all
of the scaling logic; the layers only ever see ``cos`` and ``sin``.
"""

from __future__ import annotations

import math

import torch

from .config import LlamaConfig


def default_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """``inv_freq[i] = theta ** (-2i / head_dim)`` for ``i < head_dim / 2``. Shape ``(d/2,)``."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta ** exponents)


def llama3_inv_freq(inv_freq: torch.Tensor, factor: float, low_freq_factor: float,
                    high_freq_factor: float, original_max_position_embeddings: int) -> torch.Tensor:
    """Llama 3.1 scaling: long wavelengths are divided by ``factor``, short ones kept, and the band
    in between blended smoothly. Shape ``(d/2,) -> (d/2,)``."""
    old_len = original_max_position_embeddings
    low_freq_wavelen = old_len / low_freq_factor
    high_freq_wavelen = old_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def dynamic_ntk_inv_freq(head_dim: int, theta: float, factor: float, seq_len: int,
                         original_len: int) -> torch.Tensor:
    """NTK-aware dynamic scaling: past the original context the base grows with the length, so
    the lowest frequencies stretch to cover it while the highest barely move. Shape ``(d/2,)``."""
    seq = torch.tensor(max(seq_len, original_len))
    # Computed with float32 tensors, as transformers does, so that both agree to the last bit.
    base = theta * ((factor * seq / original_len) - (factor - 1)) ** (head_dim / (head_dim - 2))
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (base ** exponents)


def original_context(config: LlamaConfig) -> int:
    """The context length the RoPE frequencies were trained for (what dynamic scaling grows from)."""
    return int((config.rope_scaling or {}).get("original_max_position_embeddings", config.max_seq_len))


def inv_freq_for(config: LlamaConfig, seq_len: int) -> torch.Tensor:
    """The inverse frequencies a model with ``config`` uses for a sequence of ``seq_len``
    positions (only ``dynamic`` depends on the length). Shape ``(d/2,)``, float32."""
    d, theta, scaling = config.head_dim, config.rope_theta, config.rope_scaling or {}
    rope_type = config.rope_type
    if rope_type == "default":
        return default_inv_freq(d, theta)
    if rope_type == "linear":
        # Position interpolation: position p is treated as p / factor.
        return default_inv_freq(d, theta) / scaling["factor"]
    if rope_type == "dynamic":
        return dynamic_ntk_inv_freq(d, theta, scaling["factor"], seq_len, original_context(config))
    if rope_type == "llama3":
        return llama3_inv_freq(default_inv_freq(d, theta), scaling["factor"], scaling["low_freq_factor"],
                               scaling["high_freq_factor"], scaling["original_max_position_embeddings"])
    raise ValueError(f"unknown rope_type {rope_type!r}; allowed: default, linear, dynamic, llama3")


def rope_cos_sin(inv_freq: torch.Tensor, position_ids: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for the half-split layout.

    ``inv_freq (d/2,)``, ``position_ids (b, t)`` -> ``cos, sin (b, t, d)``; the angles are
    computed in float32 whatever ``dtype`` the tables are returned in (angles reach thousands of
    radians, where bf16 has no fraction bits left).
    """
    angles = position_ids.float()[..., None] * inv_freq.to(position_ids.device)[None, None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class RotaryEmbedding:
    """A model's RoPE: ``rope(position_ids (b, t), dtype) -> cos, sin (b, t, d)``.

    The angles of every position up to ``max_seq_len`` are computed once per device and dtype, in
    float32 (see :func:`rope_cos_sin`), and looked up: a decoding step reads one row instead of
    evaluating cos and sin again. Dynamic scaling has no fixed table (its frequencies depend on the
    sequence length), so it computes the angles of the positions asked for. A plain object rather
    than a module: ``model.to(torch.bfloat16)`` must not round the tables.
    """

    def __init__(self, config: LlamaConfig) -> None:
        self.config = config
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        device = position_ids.device
        if self.config.rope_type == "dynamic":
            seq_len = max(original_context(self.config), int(position_ids.max()) + 1)
            return rope_cos_sin(inv_freq_for(self.config, seq_len).to(device), position_ids, dtype)
        if (device, dtype) not in self._tables:
            inv_freq = inv_freq_for(self.config, original_context(self.config)).to(device)
            positions = torch.arange(self.config.max_seq_len, device=device)[None]
            self._tables[device, dtype] = tuple(table[0] for table in rope_cos_sin(inv_freq, positions, dtype))
        cos, sin = self._tables[device, dtype]
        return cos[position_ids], sin[position_ids]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last axis: multiplication by ``i`` for
    the half-split pairs."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (b, t, h, d)`` by the angles in ``cos, sin (b, t, d)`` (half-split layout)."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return x * cos + rotate_half(x) * sin


def apply_rope_complex(x: torch.Tensor, inv_freq: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Meta's form: view interleaved pairs of ``x (b, t, h, d)`` as complex numbers and multiply by
    ``exp(i * angle)``. ``position_ids (b, t)``. Used to show the two forms agree."""
    angles = position_ids.float()[..., None] * inv_freq[None, None, :]
    rotation = torch.polar(torch.ones_like(angles), angles)[:, :, None, :]  # b t 1 (d/2)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def interleaved_to_half_permutation(head_dim: int) -> torch.Tensor:
    """Index ``perm`` with ``half_split = interleaved[..., perm]`` for one head.

    Interleaved pair ``i`` is features ``(2i, 2i+1)``; half-split pair ``i`` is ``(i, i + d/2)``,
    so the even features go first, then the odd ones: ``perm = [0, 2, 4, ..., 1, 3, 5, ...]``.
    Applying it to the output rows of ``wq``/``wk`` (per head) converts Meta's checkpoints.
    """
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def permute_heads_for_half_split(weight: torch.Tensor, n_heads: int, inverse: bool = False) -> torch.Tensor:
    """Reorder the output rows of a ``wq``/``wk`` weight ``((h d), c)`` from Meta's interleaved
    layout to the half-split layout, head by head; ``inverse=True`` reorders them back."""
    head_dim = weight.shape[0] // n_heads
    perm = interleaved_to_half_permutation(head_dim)
    perm = torch.argsort(perm) if inverse else perm
    return weight.reshape(n_heads, head_dim, -1)[:, perm].reshape(weight.shape)
