"""Saving and loading weights: safetensors plus a JSON config, written atomically.

No pickle anywhere: a checkpoint from a stranger cannot run code on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .fileio import atomic_write, save_json, save_tensors  # noqa: F401  (re-exported)
from .hf import from_hf_config_dict, from_hf_state_dict, to_hf_config_dict, to_hf_state_dict
from .model import Llama


def save_pretrained(model: Llama, directory: str | Path) -> None:
    """``config.json`` + ``model.safetensors`` in transformers' format, loadable by
    ``transformers.LlamaForCausalLM.from_pretrained`` and :meth:`Llama.from_pretrained`."""
    directory = Path(directory)
    config = to_hf_config_dict(model.config)
    config["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    save_tensors(directory / "model.safetensors", to_hf_state_dict(model), metadata={"format": "pt"})
    save_json(directory / "config.json", config)


def load_pretrained(directory: str | Path, dtype: torch.dtype | None = None, **config_overrides: Any) -> Llama:
    """Load a directory with ``config.json`` and ``model.safetensors`` (one file or shards listed in
    ``model.safetensors.index.json``). Raises ``ValueError`` naming a missing or mis-shaped tensor.

    ``dtype=None`` keeps the stored dtype. Pass ``torch.float32`` to compute in full precision
    whatever the file holds: weights stored in bfloat16 to save space would otherwise make every
    forward pass bfloat16, several times slower on a CPU and with different numbers."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{directory}: no config.json")
    config = from_hf_config_dict(json.loads(config_path.read_text()), **config_overrides)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"{directory}: no model.safetensors (only safetensors weights are loaded, never pickle)")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(directory / name)))
    dtype = dtype or next(iter(state.values())).dtype
    return from_hf_state_dict(state, config, source=str(directory)).to(dtype)
