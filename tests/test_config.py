"""LlamaConfig: published sizes, validation messages and serialisation."""

from __future__ import annotations

import json

import pytest

from minillama.config import PRESETS, ROPE_TYPES, LlamaConfig
from minillama.model import Llama, LlamaRewardModel

# Parameter counts of Meta's released checkpoints and their SwiGLU widths.
PUBLISHED = {
    "llama2-7b": (6_738_415_616, 11008),
    "llama2-13b": (13_015_864_320, 13824),
    "llama2-70b": (68_976_648_192, 28672),
    "llama3-8b": (8_030_261_248, 14336),
}

LLAMA3_SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=16)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_count_and_ffn_width(name: str) -> None:
    config = LlamaConfig.from_preset(name)
    count, width = PUBLISHED[name]
    assert config.num_parameters() == count
    assert config.ffn_hidden_dim == width


def test_every_preset_is_valid_and_overridable() -> None:
    for name in PRESETS:
        config = LlamaConfig.from_preset(name, max_seq_len=128)
        assert config.max_seq_len == 128
        assert config.n_heads % config.n_kv_heads == 0


def test_unknown_preset_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="llama2-7b"):
        LlamaConfig.from_preset("llama2-8b")


@pytest.mark.parametrize("overrides", [
    dict(), dict(tie_embeddings=True), dict(n_kv_heads=2), dict(n_kv_heads=1, tie_embeddings=True),
    dict(ffn_dim_multiplier=1.3, multiple_of=32), dict(hidden_dim=100),
], ids=["untied", "tied", "gqa", "mqa-tied", "multiplier", "explicit-hidden"])
def test_num_parameters_counts_a_built_model(tiny_config, overrides: dict) -> None:
    config = tiny_config(**overrides)
    model = Llama(config)
    # parameters() yields a tied matrix once, so this is the true count.
    assert sum(p.numel() for p in model.parameters()) == config.num_parameters()
    embeddings = model.tok_embeddings.weight.numel() * (1 if config.tie_embeddings else 2)
    assert config.num_parameters(include_embeddings=False) == config.num_parameters() - embeddings


def test_tiny_preset_builds_to_its_count() -> None:
    config = LlamaConfig.from_preset("tiny")
    assert sum(p.numel() for p in Llama(config).parameters()) == config.num_parameters() == 4_000_000


def test_reward_model_has_a_one_row_head(tiny_config) -> None:
    config = tiny_config()
    rm = LlamaRewardModel(config)
    backbone = config.num_parameters() - config.vocab_size * config.dim  # no LM head
    assert sum(p.numel() for p in rm.parameters()) == backbone + config.dim


def test_ffn_width_rounds_up_to_multiple_of(tiny_config) -> None:
    config = tiny_config(dim=64, multiple_of=48)
    assert config.ffn_hidden_dim == 192  # int(2 * 256 / 3) = 170 -> next multiple of 48
    assert tiny_config(hidden_dim=100).ffn_hidden_dim == 100


@pytest.mark.parametrize("overrides, pattern", [
    (dict(dim=64, n_heads=5), r"dim \(64\) must be divisible by n_heads \(5\).*divisors of 64"),
    (dict(n_heads=4, n_kv_heads=3), r"n_heads \(4\) must be divisible by n_kv_heads \(3\).*divisors of 4"),
    (dict(n_heads=4, n_kv_heads=8), r"n_kv_heads.*divisors of 4"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}),
     r"rope_type.*one of \('default', 'linear', 'dynamic', 'llama3'\).*'yarn'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     r"llama3.*missing \['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'\]"),
    (dict(rope_scaling={"rope_type": "linear"}), r"missing \['factor'\]"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 0.5}), r"factor.*>= 1"),
    (dict(n_layers=0), r"n_layers must be >= 1"),
    (dict(norm_eps=0.0), r"norm_eps must be > 0"),
    (dict(dim=24, n_heads=8), r"head_dim.*3 must be even"),
], ids=["heads", "kv-heads", "kv-more-than-q", "rope-type", "llama3-keys", "linear-factor", "factor-range",
        "layers", "eps", "odd-head-dim"])
def test_invalid_config_names_field_and_allowed_values(tiny_config, overrides: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        tiny_config(**overrides)


def test_wrong_type_is_a_type_error(tiny_config) -> None:
    with pytest.raises(TypeError, match="dim must be an int"):
        tiny_config(dim=64.0)
    with pytest.raises(TypeError, match="rope_scaling must be None or a dict"):
        tiny_config(rope_scaling="linear")


def test_rope_types_constant_matches_validation(tiny_config) -> None:
    assert ROPE_TYPES == ("default", "linear", "dynamic", "llama3")
    assert tiny_config(rope_scaling={"type": "linear", "factor": 2.0}).rope_type == "linear"  # HF's old key


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_round_trip_of_presets(name: str) -> None:
    config = LlamaConfig.from_preset(name)
    assert LlamaConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_dict_round_trip_with_rope_scaling(tiny_config) -> None:
    config = tiny_config(n_kv_heads=2, rope_scaling=LLAMA3_SCALING, tie_embeddings=True)
    loaded = LlamaConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert loaded == config
    loaded.rope_scaling["factor"] = 2.0  # a copy, not shared with the original
    assert config.rope_scaling["factor"] == 8.0


def test_the_config_holds_the_architecture_only(tiny_config) -> None:
    # How a model runs is set on the model (Llama(attn_backend=..., max_batch_size=...)), not here.
    with pytest.raises(ValueError, match=r"unknown LlamaConfig fields \['attn_backend', 'max_batch_size'\]"):
        LlamaConfig.from_dict(tiny_config().to_dict() | {"attn_backend": "eager", "max_batch_size": 8})


def test_unknown_field_is_rejected_by_name(tiny_config) -> None:
    data = tiny_config().to_dict() | {"n_experts": 8}
    with pytest.raises(ValueError, match=r"unknown LlamaConfig fields \['n_experts'\].*'vocab_size'"):
        LlamaConfig.from_dict(data)


def test_replace_revalidates(tiny_config) -> None:
    config = tiny_config()
    with pytest.raises(ValueError, match="n_kv_heads"):
        config.replace(n_kv_heads=3)
    assert config.replace(n_kv_heads=2).n_rep == 2
