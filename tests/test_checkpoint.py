"""Model folders: one transformers-compatible format for the language and the reward model, one
checked loader whose every error names the file, atomic writes, no pickle."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minillama.checkpoint import load_model, resolve_model_dir, save_model
from minillama.fileio import atomic_write, save_json
from minillama.hf import to_hf, to_hf_config_dict
from minillama.model import Llama, LlamaRewardModel

IDS = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(31))


def max_diff(model: Llama, hf: transformers.LlamaForCausalLM) -> float:
    with torch.no_grad():
        return (model(IDS) - hf(IDS).logits).abs().max().item()


@pytest.mark.parametrize("overrides", [dict(n_kv_heads=2), dict(n_kv_heads=1, tie_embeddings=True)],
                         ids=["gqa", "mqa-tied"])
def test_saved_directory_loads_in_transformers(random_llama, tmp_path, overrides: dict) -> None:
    model = random_llama(seed=1, **overrides)
    save_model(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert max_diff(model, hf) <= 1e-5
    # ... and back into minillama with the same config and the same weights.
    back = load_model(tmp_path)
    assert back.config == model.config
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("shard", [None, "40KB"], ids=["one-file", "sharded"])
def test_transformers_directory_loads_in_minillama(tiny_config, random_weights, tmp_path, tied: bool,
                                                   shard: str | None) -> None:
    config = tiny_config(n_heads=8, n_kv_heads=2, tie_embeddings=tied)
    hf_config = {k: v for k, v in to_hf_config_dict(config).items() if k != "minillama"}
    hf = random_weights(transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config)), seed=2)
    hf.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    model = load_model(tmp_path)
    assert model.config.tie_embeddings == tied and model.config.n_kv_heads == 2
    assert max_diff(model, hf) <= 1e-5


def test_bf16_round_trip_keeps_dtype_and_bits(random_llama, tmp_path) -> None:
    model = random_llama(seed=3).to(torch.bfloat16)
    save_model(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    back = load_model(tmp_path)
    assert back.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))


def test_bf16_directory_loads_in_float32_when_asked(random_llama, tmp_path) -> None:
    # The committed course checkpoints are bfloat16; the course stages load them with
    # dtype=float32 so that sampling and evaluation do not silently run in bfloat16.
    model = random_llama(seed=3).to(torch.bfloat16)
    save_model(model, tmp_path)
    back = load_model(tmp_path, dtype=torch.float32)
    assert back.dtype == torch.float32 and all(p.dtype == torch.float32 for p in back.parameters())
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a.float(), b), name  # exact: every bfloat16 value is a float32 value
    with torch.no_grad():
        assert back(IDS).dtype == torch.float32


def damage(directory, name: str, replacement: torch.Tensor | None) -> None:
    tensors = load_file(str(directory / "model.safetensors"))
    if replacement is None:
        del tensors[name]
    else:
        tensors[name] = replacement
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_named(random_llama, tmp_path) -> None:
    save_model(random_llama(), tmp_path)
    damage(tmp_path, "model.layers.1.mlp.down_proj.weight", None)
    with pytest.raises(ValueError, match=r"missing tensor\(s\) \['model.layers.1.mlp.down_proj.weight'\]"):
        load_model(tmp_path)


def test_misshaped_tensor_is_named(random_llama, tmp_path) -> None:
    save_model(random_llama(), tmp_path)
    damage(tmp_path, "model.layers.0.self_attn.k_proj.weight", torch.zeros(32, 64))
    with pytest.raises(ValueError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \(32, 64\), "
                                         r"the config expects \(64, 64\)"):
        load_model(tmp_path)


def test_unexpected_tensor_is_named(random_llama, tmp_path) -> None:
    save_model(random_llama(), tmp_path)
    damage(tmp_path, "model.layers.2.input_layernorm.weight", torch.ones(64))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) \['model.layers.2.input_layernorm.weight'\]"):
        load_model(tmp_path)


def test_no_pickle_is_written_or_read(random_llama, tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for module, name in [(pickle, "dump"), (pickle, "dumps"), (pickle, "load"), (pickle, "loads"),
                         (torch, "save"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    model = random_llama(seed=4)
    save_model(model, tmp_path / "model")
    back = load_model(tmp_path / "model")
    assert torch.equal(back.output.weight, model.output.weight)
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]


def test_pickle_only_directory_is_refused(random_llama, tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config_dict(random_llama().config)))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="only safetensors weights are loaded, never pickle"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="absent: neither a model folder"):
        load_model(tmp_path / "absent")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    save_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'  # sorted, stable

    def crash(path):
        path.write_text("half of a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_loading_leaves_the_global_rng_alone(random_llama, tmp_path) -> None:
    # Building the model to load into (or to convert to) must not draw from torch's global generator:
    # a script that seeds, loads, then samples would otherwise depend on the checkpoint's size.
    save_model(random_llama(), tmp_path)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    model = load_model(tmp_path)
    to_hf(model)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_reward_model_saves_and_loads_in_the_same_format(tiny_config, tmp_path) -> None:
    rm = LlamaRewardModel(tiny_config(n_kv_heads=2), seed=5)
    with torch.no_grad():
        rm.score.weight.normal_(generator=torch.Generator().manual_seed(5))
    save_model(rm, tmp_path / "run" / "model")
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 1
    assert "score.weight" in load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    back = load_model(tmp_path / "run", kind=LlamaRewardModel)  # a run folder: its model/ is read
    assert isinstance(back, LlamaRewardModel) and back.config == rm.config
    with torch.no_grad():
        assert torch.equal(back(IDS), rm.eval()(IDS))
        # transformers reads it as the sequence classifier it says it is: the same score at the last token.
        hf = transformers.LlamaForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
        torch.testing.assert_close(hf(IDS[:1]).logits[:, 0], rm(IDS[:1]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="holds a LlamaRewardModel, not a Llama"):
        load_model(tmp_path / "run", kind=Llama)
    assert resolve_model_dir(tmp_path / "run") == tmp_path / "run" / "model"


def test_a_truncated_weights_file_is_a_value_error_naming_it(random_llama, tmp_path) -> None:
    save_model(random_llama(), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(tmp_path)


@pytest.mark.parametrize("text, message", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                                           ('{"hidden_size": 64}', "no entry 'num_attention_heads'")])
def test_a_corrupt_config_is_a_value_error_naming_it(random_llama, tmp_path, text: str, message: str) -> None:
    save_model(random_llama(), tmp_path)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=rf"config\.json: {message}"):
        load_model(tmp_path)
