"""cos/sin tables repeated element by element (a0, a0, a1, a1, ...), the interleaved layout's
tables, where the half-split layout needs (a0, a1, ..., a0, a1, ...)."""
import torch

EXPECT_FAIL = {"rope_cos_sin_matches_reference"}


def rope_cos_sin(inv_freq: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    angles = position_ids.float()[:, :, None] * inv_freq[None, None, :]
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()
