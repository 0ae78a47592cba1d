"""Model folders: one format for every model minillama writes, and one loader that reads them all.

A model folder holds ``config.json`` and ``model.safetensors`` in Hugging Face's layout, so that
``transformers`` loads a language model as it is: the language model is a ``LlamaForCausalLM``,
the reward model a ``LlamaForSequenceClassification`` with one label (the same backbone, and
``score.weight`` for the head), and ``config.json`` says which. Files are written atomically; no
pickle anywhere, so a folder from a stranger cannot run code on load.

:func:`load_model` reads any such folder, or a run folder with one in ``model/``, and turns every
problem (a missing file, a truncated ``model.safetensors``, a corrupt ``config.json``, a tensor of
the wrong shape) into a ``ValueError`` that names the file and says what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .fileio import save_json, save_tensors
from .hf import from_hf_config_dict, from_hf_state_dict, load_state_dict_checked, minillama_name, hf_name
from .hf import to_hf_config_dict, to_hf_state_dict
from .model import Llama, LlamaBackbone, LlamaRewardModel

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
ARCHITECTURES: dict[str, type[LlamaBackbone]] = {"LlamaForCausalLM": Llama,
                                                 "LlamaForSequenceClassification": LlamaRewardModel}
M = TypeVar("M", bound=LlamaBackbone)


def save_model(model: LlamaBackbone, directory: str | Path) -> Path:
    """Write ``model`` (a :class:`Llama` or a :class:`LlamaRewardModel`) to ``directory``."""
    directory = Path(directory)
    architecture = next(name for name, cls in ARCHITECTURES.items() if type(model) is cls)
    config = {**to_hf_config_dict(model.config), "architectures": [architecture],
              "torch_dtype": str(model.dtype).removeprefix("torch.")}
    if isinstance(model, LlamaRewardModel):
        config["num_labels"] = 1
    save_tensors(directory / WEIGHTS_FILE, to_hf_state_dict(model), metadata={"format": "pt"})
    save_json(directory / CONFIG_FILE, config)
    return directory


def resolve_model_dir(path: str | Path) -> Path:
    """``path`` itself when it is a model folder, or its ``model/`` when it is a run folder."""
    path = Path(path)
    for directory in (path, path / "model"):
        if (directory / CONFIG_FILE).is_file():
            return directory
    raise ValueError(f"{path}: neither a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a run folder with "
                     f"model/ in it")


def load_model(path: str | Path, dtype: torch.dtype | None = None, kind: type[M] | None = None,
               **config_overrides: Any) -> M:
    """The model in a model folder (or a run folder's ``model/``), in its stored dtype or ``dtype``.

    ``kind`` (:class:`Llama` or :class:`LlamaRewardModel`) asks for one kind of model; None takes
    what the folder holds. Weights stored in bfloat16 to save space make every forward pass
    bfloat16, several times slower on a CPU and with different numbers: pass ``torch.float32`` to
    compute in full precision whatever the file holds."""
    directory = resolve_model_dir(path)
    config_path = directory / CONFIG_FILE
    hf = _read_config(config_path)
    architecture = (hf.get("architectures") or ["LlamaForCausalLM"])[0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{config_path}: architecture {architecture!r} is not one minillama loads; "
                         f"allowed: {list(ARCHITECTURES)}")
    cls = ARCHITECTURES[architecture]
    if kind is not None and cls is not kind:
        raise ValueError(f"{directory} holds a {cls.__name__}, not a {kind.__name__}")
    try:
        config = from_hf_config_dict(hf, **config_overrides)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {err if not isinstance(err, KeyError) else f'no entry {err}'}") from err
    state = _read_weights(directory)
    model = from_hf_state_dict(state, config, source=str(directory), cls=cls)
    return model.to(dtype or next(iter(state.values())).dtype)


def load_weights(model: LlamaBackbone, directory: str | Path) -> None:
    """Copy the weights of a model folder into ``model`` (names and shapes must match)."""
    state = {minillama_name(k): v for k, v in _read_weights(Path(directory)).items()}
    with torch.no_grad():
        load_state_dict_checked(model, state, str(directory), source_name=hf_name)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` (or of the shards ``model.safetensors.index.json`` lists)."""
    if (directory / INDEX_FILE).is_file():
        files = sorted(set(_read_config(directory / INDEX_FILE).get("weight_map", {}).values()))
    elif (directory / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise ValueError(f"{directory}: no {WEIGHTS_FILE} (only safetensors weights are loaded, never pickle)")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(load_file(str(directory / name)))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{directory / name}: not a readable safetensors file ({err})") from err
    if not state:
        raise ValueError(f"{directory}: the weights hold no tensors")
    return state
