"""The right rotation, returned in float64 whatever x's dtype is."""
import torch

EXPECT_FAIL = {"apply_rope_matches_reference", "apply_rope_identity_at_position_zero",
               "apply_rope_scores_depend_on_distance_only", "apply_rope_keeps_shape_and_dtype"}


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x = x.double()
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, :, None, :].double() + torch.cat((-x2, x1), dim=-1) * sin[:, :, None, :].double()
