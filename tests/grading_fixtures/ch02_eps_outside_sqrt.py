"""eps added to the root mean square instead of the mean square: x / (sqrt(mean(x^2)) + eps).
Indistinguishable on inputs of unit scale, wrong on tiny ones."""
import torch

EXPECT_FAIL = {"rms_norm_eps_inside_sqrt"}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x32 = x.float()
    rms = x32.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return weight * (x32 / (rms + eps)).to(x.dtype)
