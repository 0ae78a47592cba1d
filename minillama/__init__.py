"""minillama: a small, tested Llama 2 / Llama 3 implementation for learning."""

from .attention import KVCache
from .checkpoint import load_model, save_model
from .config import PRESETS, LlamaConfig
from .generate import generate
from .mlp import SwiGLU
from .model import Block, Llama, LlamaRewardModel
from .norm import RMSNorm
from .sequences import causal_lm_loss

__all__ = ["Block", "KVCache", "Llama", "LlamaConfig", "LlamaRewardModel", "PRESETS", "RMSNorm", "SwiGLU",
           "causal_lm_loss", "generate", "load_model", "save_model"]
__version__ = "0.1.0"
