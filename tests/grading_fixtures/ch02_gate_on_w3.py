"""SiLU applied to the up projection w3 instead of the gate w1."""
import torch
import torch.nn.functional as F

EXPECT_FAIL = {"swiglu_matches_reference"}


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    return (F.silu(x @ w3.T) * (x @ w1.T)) @ w2.T
