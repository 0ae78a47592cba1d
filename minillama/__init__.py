"""minillama: a small, tested Llama 2 / Llama 3 implementation for learning."""

from .attention import KVCache
from .config import PRESETS, LlamaConfig
from .generate import generate
from .mlp import SwiGLU
from .model import Block, Llama, LlamaRewardModel, causal_lm_loss
from .norm import RMSNorm

__all__ = ["Block", "KVCache", "Llama", "LlamaConfig", "LlamaRewardModel", "PRESETS", "RMSNorm", "SwiGLU",
           "causal_lm_loss", "generate"]
__version__ = "0.1.0"
