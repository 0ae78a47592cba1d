"""LayerNorm instead of RMSNorm: subtracts the mean and divides by the standard deviation."""
import torch

EXPECT_FAIL = {"rms_norm_matches_reference", "rms_norm_eps_inside_sqrt", "rms_norm_keeps_dtype"}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x32 = x.float()
    centered = x32 - x32.mean(dim=-1, keepdim=True)
    normed = centered * torch.rsqrt(centered.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)
