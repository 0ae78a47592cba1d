"""Statistics in float32, but the result is never cast back to x's dtype."""
import torch

EXPECT_FAIL = {"rms_norm_keeps_dtype"}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x32 = x.float()
    return weight.float() * x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
