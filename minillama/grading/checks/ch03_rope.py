"""Chapter 03 checks: ``rope_inv_freq``, ``rope_cos_sin`` and ``apply_rope`` (half-split layout).

Shapes: ``inv_freq (d/2,)``, ``position_ids (b, t)``, ``cos, sin (b, t, d)``, ``x (b, t, h, d)``.
The ``apply_rope`` checks use the reference tables, so that a mistake in the tables costs points
only in the table checks.
"""

from __future__ import annotations

import torch

from ...rope import apply_rope, default_inv_freq, rope_cos_sin
from ..check import Checks, Learner, expect_pair, expect_tensor, expect_tensor_like, fail, seeded

CHECKS = Checks()


def _tables(position_ids: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_cos_sin(default_inv_freq(head_dim, theta), position_ids)


@CHECKS.add(points=1, hint="inv_freq[i] = theta ** (-2i / head_dim) for i = 0 .. head_dim/2 - 1, in float32")
def rope_inv_freq_matches_reference(learner: Learner) -> None:
    rope_inv_freq = learner.function("rope_inv_freq")
    for head_dim, theta in ((8, 10000.0), (64, 10000.0), (128, 500000.0)):
        expect_tensor(rope_inv_freq(head_dim, theta), default_inv_freq(head_dim, theta),
                      f"rope_inv_freq({head_dim}, {theta:g})", atol=1e-7, rtol=1e-5)


@CHECKS.add(points=2, hint="angles = position * inv_freq, shape (b, t, d/2); the half-split layout repeats "
                           "them as cat((angles, angles), -1), not interleaved")
def rope_cos_sin_matches_reference(learner: Learner) -> None:
    rope_cos_sin_ = learner.function("rope_cos_sin")
    inv_freq = default_inv_freq(16, 10000.0)
    position_ids = torch.tensor([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]])  # a row may start anywhere
    cos, sin = expect_pair(rope_cos_sin_(inv_freq.clone(), position_ids.clone()), "rope_cos_sin", "(cos, sin)")
    ref_cos, ref_sin = rope_cos_sin(inv_freq, position_ids)
    expect_tensor(cos, ref_cos, "cos from rope_cos_sin", atol=1e-5, rtol=1e-5)
    expect_tensor(sin, ref_sin, "sin from rope_cos_sin", atol=1e-5, rtol=1e-5)


@CHECKS.add(points=2, hint="x * cos + rotate_half(x) * sin, with rotate_half((x1, x2)) = (-x2, x1) on the two "
                           "halves of the last axis, and cos/sin broadcast over the heads axis")
def apply_rope_matches_reference(learner: Learner) -> None:
    apply_rope_ = learner.function("apply_rope")
    gen = seeded(0)
    x = torch.randn(2, 5, 3, 16, generator=gen)
    position_ids = torch.randint(0, 100, (2, 5), generator=gen)
    cos, sin = _tables(position_ids, 16)
    expect_tensor(apply_rope_(x.clone(), cos.clone(), sin.clone()), apply_rope(x, cos, sin),
                  "apply_rope(x, cos, sin)")


@CHECKS.add(points=1, hint="at position 0, cos = 1 and sin = 0: the rotation must leave x exactly as it is")
def apply_rope_identity_at_position_zero(learner: Learner) -> None:
    apply_rope_ = learner.function("apply_rope")
    x = torch.randn(1, 4, 2, 8, generator=seeded(1))
    cos, sin = _tables(torch.zeros(1, 4, dtype=torch.long), 8)
    expect_tensor(apply_rope_(x.clone(), cos.clone(), sin.clone()), x, "apply_rope at position 0", atol=1e-6, rtol=0)


@CHECKS.add(points=2, hint="RoPE rotates each pair (x_i, x_{i+d/2}) by its angle, so a query-key score depends "
                           "only on their distance; rotate the pairs cos/sin were built for")
def apply_rope_scores_depend_on_distance_only(learner: Learner) -> None:
    apply_rope_ = learner.function("apply_rope")
    gen = seeded(2)
    q, k = torch.randn(1, 6, 2, 16, generator=gen), torch.randn(1, 6, 2, 16, generator=gen)
    scores = []
    for shift in (0, 11):
        positions = torch.arange(shift, shift + 6)[None]
        cos, sin = _tables(positions, 16)
        q_rot = apply_rope_(q.clone(), cos.clone(), sin.clone())
        k_rot = apply_rope_(k.clone(), cos.clone(), sin.clone())
        expect_tensor_like(q_rot, q, "apply_rope(q, cos, sin)")
        scores.append(torch.einsum("b t h d, b s h d -> b h t s", q_rot, k_rot))
    if not torch.allclose(scores[0], scores[1], atol=1e-4, rtol=1e-4):
        fail("query-key scores change when every position shifts by 11")


@CHECKS.add(points=1, hint="return a tensor of x's shape and dtype: compute with x's dtype and don't sum or "
                           "reshape axes away")
def apply_rope_keeps_shape_and_dtype(learner: Learner) -> None:
    apply_rope_ = learner.function("apply_rope")
    x = torch.randn(2, 3, 4, 8, generator=seeded(3)).to(torch.bfloat16)
    cos, sin = rope_cos_sin(default_inv_freq(8, 10000.0), torch.arange(3).expand(2, 3), dtype=torch.bfloat16)
    expected = apply_rope(x, cos, sin)
    expect_tensor(apply_rope_(x.clone(), cos.clone(), sin.clone()), expected, "apply_rope(bf16 x, bf16 tables)",
                  atol=2e-2, rtol=2e-2)
