"""Checkpoints that resume a run exactly, with no pickle anywhere.

A checkpoint is a directory ``<out>/checkpoints/step_00000006/``:

* ``config.json`` and ``model.safetensors``: the weights as a model folder
  (:mod:`minillama.checkpoint`), so that ``load_model`` reads any checkpoint;
* ``optimizer.safetensors``: AdamW's per-parameter state flattened to
  ``state.<param name>.<exp_avg | exp_avg_sq | step>``;
* ``rng_rank<R>.safetensors``: every random generator of rank ``R`` (torch CPU and CUDA, Python,
  NumPy) as uint8 tensors of their raw bytes;
* ``trainer_state.json``: step, schedule, data position, the training and model configs, the
  optimizer's parameter order and hyper-parameters.

It is built in a hidden temporary directory and renamed into place when complete, then the
pointer file ``checkpoints/latest`` (the directory's name) is replaced atomically: a crash at any
moment leaves the previous checkpoint intact and ``latest`` naming a complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..checkpoint import load_weights, save_model
from ..fileio import atomic_write, save_json, save_tensors
from ..model import LlamaBackbone
from .ddp import DistEnv, barrier

CHECKPOINTS, LATEST = "checkpoints", "latest"
OPTIMIZER_FILE, STATE_FILE = "optimizer.safetensors", "trainer_state.json"
FORMAT_VERSION = 1


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.safetensors"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


# ---------------------------------------------------------------------------- random generators
def _as_bytes(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).copy())


def rng_state_tensors() -> dict[str, torch.Tensor]:
    """The state of every generator this process may draw from, as uint8 tensors."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch_cpu": torch.get_rng_state(),
        "python_words": _as_bytes(np.array(words, dtype=np.uint32)),  # 624 state words + index
        "python_gauss": _as_bytes(np.array([gauss is not None, gauss or 0.0], dtype=np.float64)),
        "numpy_keys": _as_bytes(keys.astype(np.uint32)),
        "numpy_pos": _as_bytes(np.array([pos, has_gauss], dtype=np.int64)),
        "numpy_gauss": _as_bytes(np.array([cached], dtype=np.float64)),
    }
    assert version == 3 and name == "MT19937", (version, name)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()  # the current device: one per rank
    return tensors


def restore_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state_tensors`."""
    def array(key: str, dtype: type) -> np.ndarray:
        return tensors[key].numpy().view(dtype)

    torch.set_rng_state(tensors["torch_cpu"])
    has_gauss, gauss = array("python_gauss", np.float64)
    random.setstate((3, tuple(int(w) for w in array("python_words", np.uint32)), float(gauss) if has_gauss else None))
    pos, np_has_gauss = array("numpy_pos", np.int64)
    np.random.set_state(("MT19937", array("numpy_keys", np.uint32), int(pos), int(np_has_gauss),
                         float(array("numpy_gauss", np.float64)[0])))
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- optimizer state
def optimizer_state_tensors(optimizer: torch.optim.Optimizer, param_names: list[str]) -> dict[str, torch.Tensor]:
    """``state.<name>.<field>`` for every tensor (or number) in the optimizer's per-parameter state.
    ``param_names[i]`` names the optimizer's parameter ``i`` (see :func:`~.optim.build_adamw`)."""
    tensors = {}
    for index, fields in optimizer.state_dict()["state"].items():
        for field, value in fields.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            # a copy: a snapshot must not change when the optimizer steps on
            tensors[f"state.{param_names[index]}.{field}"] = value.detach().to("cpu", copy=True)
    return tensors


def load_optimizer_state(optimizer: torch.optim.Optimizer, param_names: list[str],
                         tensors: dict[str, torch.Tensor]) -> None:
    """Put the state saved by :func:`optimizer_state_tensors` back; the hyper-parameters stay as
    the optimizer has them now (the trainer sets the learning rate every step anyway)."""
    index = {name: i for i, name in enumerate(param_names)}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, field = key.removeprefix("state.").rsplit(".", 1)
        if name not in index:
            raise ValueError(f"optimizer state names parameter {name!r}, which this model's optimizer does not "
                             f"have; its parameters: {param_names[:4]} ...")
        state.setdefault(index[name], {})[field] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


# ---------------------------------------------------------------------------- checkpoints
def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint ``<out_dir>/checkpoints/latest`` points to, or ``None`` when there is none."""
    pointer = Path(out_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"{pointer} names {path.name}, which is not a complete checkpoint")
    return path


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names) and any
    half-written temporary directory a crash left behind."""
    root = Path(out_dir) / CHECKPOINTS
    for stale in root.glob(".step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    latest = latest_checkpoint(out_dir)
    for path in list_checkpoints(out_dir)[:-keep_last]:
        if path != latest:
            shutil.rmtree(path)


def save_checkpoint(out_dir: str | Path, step: int, model: LlamaBackbone, optimizer: torch.optim.Optimizer,
                    param_names: list[str], trainer_state: dict[str, Any], env: DistEnv = DistEnv(),
                    keep_last: int = 2) -> Path:
    """Write the checkpoint for ``step`` (every rank calls this; each writes its generators, rank 0
    the rest), point ``latest`` at it and prune to ``keep_last``. Returns its directory."""
    root = Path(out_dir) / CHECKPOINTS
    final, tmp = root / checkpoint_name(step), root / f".{checkpoint_name(step)}.tmp"
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(env)
    save_tensors(tmp / rng_file(env.rank), rng_state_tensors())
    barrier(env)
    if env.is_main:
        save_model(model, tmp)
        save_tensors(tmp / OPTIMIZER_FILE, optimizer_state_tensors(optimizer, param_names))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]]
        save_json(tmp / STATE_FILE, {**trainer_state, "format": FORMAT_VERSION, "step": step,
                                     "world_size": env.world_size, "param_names": param_names,
                                     "param_groups": groups})
        if final.exists():  # the same step saved again (e.g. a rerun of a finished run)
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(root / LATEST, lambda p: p.write_text(final.name + "\n"))
        prune_checkpoints(out_dir, keep_last)
    barrier(env)
    return final


def load_checkpoint(checkpoint: str | Path, model: LlamaBackbone, optimizer: torch.optim.Optimizer | None = None,
                    param_names: list[str] | None = None, env: DistEnv = DistEnv()) -> dict[str, Any]:
    """Restore weights, optimizer state and this rank's generators; return ``trainer_state.json``.
    A checkpoint of a model of another shape is a ``ValueError`` that lists the differing fields.

    A rank with no saved generators (the job now runs on more processes than it did) keeps the
    ones it was seeded with, so the resumed run is correct but not bit-identical."""
    checkpoint = Path(checkpoint)
    state = json.loads((checkpoint / STATE_FILE).read_text())
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{checkpoint}: checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}")
    saved, requested = state.get("model_config"), model.config.to_dict()
    if saved is not None and saved != requested:
        diff = {k: (v, requested.get(k)) for k, v in saved.items() if v != requested.get(k)}
        raise ValueError(f"{checkpoint} holds a different model (saved, requested): {diff}; use the same "
                         f"settings to resume, or start afresh (--fresh, or another output folder)")
    load_weights(model, checkpoint)
    if optimizer is not None:
        if param_names != state["param_names"]:
            raise ValueError(f"{checkpoint}: the optimizer's parameters differ from the checkpoint's "
                             f"({len(param_names or [])} vs {len(state['param_names'])} names)")
        load_optimizer_state(optimizer, param_names, load_file(str(checkpoint / OPTIMIZER_FILE)))
    rng_path = checkpoint / rng_file(env.rank)
    if rng_path.is_file():
        restore_rng_state(load_file(str(rng_path)))
    return state
