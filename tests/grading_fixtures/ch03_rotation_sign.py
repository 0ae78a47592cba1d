"""rotate_half with the sign on the wrong half, (x2, -x1): every pair turns backwards. Still a
rotation, so position 0 and relative positions look right; the numbers do not."""
import torch

EXPECT_FAIL = {"apply_rope_matches_reference", "apply_rope_keeps_shape_and_dtype"}


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, :, None, :] + torch.cat((x2, -x1), dim=-1) * sin[:, :, None, :]
