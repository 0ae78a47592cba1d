"""RoPE on adjacent pairs (x0, x1), (x2, x3), ...: Meta's interleaved rotation applied to tables
built for the half-split layout, so each pair mixes two different angles."""
import torch

EXPECT_FAIL = {"apply_rope_matches_reference", "apply_rope_scores_depend_on_distance_only",
               "apply_rope_keeps_shape_and_dtype"}


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
