import random

import numpy as np
import torch
from safetensors.torch import load_file

from minillama.checkpoint import load_model
from minillama.train import build_adamw, latest_checkpoint, load_checkpoint
from minillama.train.state import (list_checkpoints, load_optimizer_state, optimizer_state_tensors,
                                   restore_rng_state, rng_state_tensors, save_checkpoint)

from train_helpers import new_model


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), random.gauss(0, 1), np.random.rand(2).tolist(), np.random.randn()


def test_every_generator_restores_and_is_stored_as_bytes():
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    random.gauss(0, 1), np.random.randn()  # leaves a cached Gaussian in both
    saved = rng_state_tensors()
    assert all(t.dtype == torch.uint8 for t in saved.values())
    expected = draws()
    restore_rng_state(saved)
    assert draws() == expected


def _train_a_step(model, optimizer):
    loss = model(torch.arange(8).reshape(1, 8)).square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_optimizer_state_round_trips_by_parameter_name():
    model = new_model()
    optimizer, names = build_adamw(model, lr=1e-2)
    _train_a_step(model, optimizer)
    tensors = optimizer_state_tensors(optimizer, names)
    assert set(tensors) == {f"state.{n}.{k}" for n in names for k in ("step", "exp_avg", "exp_avg_sq")}
    copy = new_model()
    copy.load_state_dict(model.state_dict())
    copy_opt, copy_names = build_adamw(copy, lr=1e-2)
    load_optimizer_state(copy_opt, copy_names, tensors)
    _train_a_step(model, optimizer), _train_a_step(copy, copy_opt)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), copy.parameters()))


def test_checkpoint_is_atomic_safetensors_and_json_only_and_pruned(tmp_path):
    model = new_model(tie_embeddings=True)
    optimizer, names = build_adamw(model, lr=1e-2)
    (tmp_path / "checkpoints" / ".step_00000099.tmp").mkdir(parents=True)  # debris of a crash
    for step in (1, 2, 3):
        _train_a_step(model, optimizer)
        save_checkpoint(tmp_path, step, model, optimizer, names, {"data": {}, "note": step}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000002", "step_00000003"]
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_00000003"
    assert {p.suffix for p in latest.iterdir()} == {".safetensors", ".json"}  # no pickle
    stored = load_file(str(latest / "model.safetensors"))  # a model folder, in Hugging Face's names
    assert "model.embed_tokens.weight" in stored and "lm_head.weight" not in stored  # tied: stored once
    assert load_model(latest).config == model.config

    restored = new_model(seed=5, tie_embeddings=True)
    restored_opt, restored_names = build_adamw(restored, lr=1e-2)
    state = load_checkpoint(latest, restored, restored_opt, restored_names)
    assert state["step"] == 3 and state["note"] == 3 and state["param_names"] == names
    assert restored.output.weight is restored.tok_embeddings.weight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
