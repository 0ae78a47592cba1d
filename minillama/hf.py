"""Interop with Hugging Face transformers and with Meta's checkpoint layout.

minillama names its parameters as Meta does; Hugging Face renames them and (like minillama)
rotates half-split RoPE pairs. Meta's checkpoints rotate interleaved pairs, so their ``wq``/``wk``
rows are permuted on the way in (see :mod:`minillama.rope`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from .config import LlamaConfig
from .model import Llama, LlamaBackbone
from .rope import original_context, permute_heads_for_half_split

if TYPE_CHECKING:  # transformers is an optional dependency (extra "hf")
    import transformers

# (minillama pattern, Hugging Face pattern); "{i}" is a layer index.
_NAME_MAP = [
    ("tok_embeddings.weight", "model.embed_tokens.weight"),
    ("layers.{i}.attention.wq.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("layers.{i}.attention.wk.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("layers.{i}.attention.wv.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("layers.{i}.attention.wo.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("layers.{i}.feed_forward.w1.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("layers.{i}.feed_forward.w2.weight", "model.layers.{i}.mlp.down_proj.weight"),
    ("layers.{i}.feed_forward.w3.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("layers.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("score.weight", "score.weight"),  # the reward model's head, as LlamaForSequenceClassification names it
]


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_TO_HF = [(_compile(ours), theirs) for ours, theirs in _NAME_MAP]
_FROM_HF = [(_compile(theirs), ours) for ours, theirs in _NAME_MAP]


def _rename(name: str, table: list[tuple[re.Pattern, str]]) -> str:
    for pattern, target in table:
        match = pattern.match(name)
        if match:
            return target.replace("{i}", match.groupdict().get("i") or "")
    raise ValueError(f"unexpected tensor name {name!r}; expected names like "
                     f"{[p.pattern for p, _ in table[:3]]} ...")


def hf_name(name: str) -> str:
    """minillama parameter name -> Hugging Face name."""
    return _rename(name, _TO_HF)


def minillama_name(name: str) -> str:
    """Hugging Face parameter name -> minillama name."""
    return _rename(name, _FROM_HF)


# ---------------------------------------------------------------------------- configs
# LlamaConfig fields transformers has no key for. They travel in a "minillama" entry of config.json
# (transformers keeps unknown entries as they are), so that a saved model loads back with the same
# context length and sizing rule, not transformers' defaults.
_MINILLAMA_FIELDS = ("multiple_of", "ffn_dim_multiplier", "hidden_dim", "max_seq_len")


def to_hf_config_dict(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` transformers' ``LlamaConfig`` reads, for ``config``."""
    scaling = None if config.rope_scaling is None else dict(config.rope_scaling)
    max_positions = config.max_seq_len
    if config.rope_type == "dynamic":
        # transformers grows the dynamic base past max_position_embeddings, our original context.
        max_positions = original_context(config)
        scaling.pop("original_max_position_embeddings", None)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": scaling,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": config.init_std,
        # Special tokens belong to the tokenizer, not to LlamaConfig; left unset, transformers would
        # default to bos=1, eos=2 and its generate() would stop wherever the model emits id 2.
        "bos_token_id": None,
        "eos_token_id": None,
        "minillama": {name: getattr(config, name) for name in _MINILLAMA_FIELDS},
    }


def from_hf_config_dict(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A :class:`LlamaConfig` from a transformers Llama ``config.json`` dict (old ``rope_scaling`` or
    new ``rope_parameters`` form). The ``"minillama"`` entry written by :func:`to_hf_config_dict`, when
    present, restores the fields transformers does not store; ``overrides`` win over both."""
    dim, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, dim // n_heads):
        raise ValueError(f"head_dim={hf['head_dim']} != hidden_size / num_attention_heads = {dim // n_heads}; "
                         "minillama supports only the standard head size")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("only Llama's silu activation without attention/MLP biases is supported")
    params = dict(hf.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or params or None
    if scaling is not None:
        scaling = {k: v for k, v in dict(scaling).items() if k not in ("rope_theta", "partial_rotary_factor")}
        scaling["rope_type"] = scaling.get("rope_type", scaling.pop("type", "default"))
        scaling.pop("type", None)
        if scaling["rope_type"] == "default":
            scaling = None
    max_positions = max_seq_len = hf.get("max_position_embeddings", 2048)
    if scaling is not None and scaling["rope_type"] == "dynamic":
        scaling["original_max_position_embeddings"] = max_positions
        max_seq_len = int(max_positions * scaling["factor"])
    extra = dict(hf.get("minillama") or {})
    unknown = sorted(set(extra) - set(_MINILLAMA_FIELDS))
    if unknown:
        raise ValueError(f"config.json 'minillama' entry has unknown fields {unknown}; "
                         f"allowed: {list(_MINILLAMA_FIELDS)}")
    if extra.get("max_seq_len") == max_positions and scaling is not None and scaling["rope_type"] == "dynamic":
        scaling.pop("original_max_position_embeddings")  # no extension: the default, as the config had it
    config = LlamaConfig(
        dim=dim, n_layers=hf["num_hidden_layers"], n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads, vocab_size=hf["vocab_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(theta), rope_scaling=scaling,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), init_std=hf.get("initializer_range", 0.02),
        **{"hidden_dim": hf["intermediate_size"], "max_seq_len": max_seq_len, **extra})
    if config.ffn_hidden_dim != hf["intermediate_size"]:
        raise ValueError(f"config.json 'minillama' sizing gives a feed-forward width of {config.ffn_hidden_dim}, "
                         f"but intermediate_size is {hf['intermediate_size']}; the two must agree")
    return config.replace(**overrides) if overrides else config


# ---------------------------------------------------------------------------- state dicts
def to_hf_state_dict(model: LlamaBackbone) -> dict[str, torch.Tensor]:
    """minillama state dict renamed for transformers (tied output weight left out, as HF does)."""
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("output.weight", None)
    return {hf_name(k): v for k, v in state.items()}


def _listed(names: list[str]) -> str:
    return f"{names[:5]}{' ...' if len(names) > 5 else ''}"


def load_state_dict_checked(model: LlamaBackbone, state: Mapping[str, torch.Tensor], source: str,
                            source_name: Callable[[str], str] = lambda name: name) -> None:
    """Copy ``state`` into ``model``; a missing, unexpected or mis-shaped tensor raises a
    ``ValueError`` that names it as ``source_name`` spells it (the name found in the file)."""
    expected = model.state_dict()
    if model.config.tie_embeddings:
        expected.pop("output.weight", None)
        state = {k: v for k, v in state.items() if k != "output.weight"}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{source}: missing tensor(s) {_listed([source_name(n) for n in missing])}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"{source}: unexpected tensor(s) {_listed([source_name(n) for n in unexpected])}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{source}: tensor {source_name(name)!r} has shape {tuple(tensor.shape)}, "
                             f"the config expects {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=False)


def empty_model(config: LlamaConfig, cls: type[LlamaBackbone] = Llama) -> LlamaBackbone:
    """A model to load weights into. Its initial weights are overwritten at once, so they are drawn
    from a forked generator: loading a checkpoint leaves torch's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        return cls(config, seed=None)


def from_hf_state_dict(state: Mapping[str, torch.Tensor], config: LlamaConfig, source: str = "state dict",
                       cls: type[LlamaBackbone] = Llama) -> LlamaBackbone:
    """A ``cls`` (:class:`Llama` or :class:`LlamaRewardModel`) holding ``state`` (Hugging Face's names)."""
    renamed = {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):  # older transformers saved this buffer
            continue
        renamed[minillama_name(name)] = tensor
    model = empty_model(config, cls)
    load_state_dict_checked(model, renamed, source, source_name=hf_name)
    return model


# ---------------------------------------------------------------------------- transformers objects
def to_hf(model: Llama) -> "transformers.LlamaForCausalLM":
    """A ``transformers.LlamaForCausalLM`` with the same weights (and so the same logits)."""
    import transformers

    hf_config = transformers.LlamaConfig(**to_hf_config_dict(model.config))
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten below
        hf_model = transformers.LlamaForCausalLM(hf_config).to(dtype=model.dtype)
    missing, unexpected = hf_model.load_state_dict(to_hf_state_dict(model), strict=False)
    allowed_missing = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(f"to_hf: missing {missing}, unexpected {unexpected}")
    if model.config.tie_embeddings:
        hf_model.tie_weights()
    return hf_model.to(model.device).eval()


def from_hf(hf_model: "transformers.LlamaForCausalLM", **config_overrides: Any) -> Llama:
    """A minillama :class:`Llama` with the weights of a transformers Llama model."""
    config = from_hf_config_dict(hf_model.config.to_dict(), **config_overrides)
    model = from_hf_state_dict(hf_model.state_dict(), config, source="from_hf")
    return model.to(device=hf_model.device, dtype=hf_model.dtype)


# ---------------------------------------------------------------------------- Meta's layout
def from_meta_state_dict(state: Mapping[str, torch.Tensor], config: LlamaConfig) -> Llama:
    """Load a state dict in Meta's llama3 ``model.py`` layout (``tok_embeddings``,
    ``layers.N.attention.wq``, ``feed_forward.w1``, ...; interleaved RoPE pairs)."""
    converted = {}
    for name, tensor in state.items():
        if name == "rope.freqs":  # Llama 2's precomputed frequency table: derived from the config, not a weight
            continue
        if name.endswith("attention.wq.weight"):
            tensor = permute_heads_for_half_split(tensor, config.n_heads)
        elif name.endswith("attention.wk.weight"):
            tensor = permute_heads_for_half_split(tensor, config.n_kv_heads)
        converted[name] = tensor
    model = empty_model(config)
    load_state_dict_checked(model, converted, "Meta state dict")
    return model


def to_meta_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_meta_state_dict`."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("attention.wq.weight"):
            tensor = permute_heads_for_half_split(tensor, model.config.n_heads, inverse=True)
        elif name.endswith("attention.wk.weight"):
            tensor = permute_heads_for_half_split(tensor, model.config.n_kv_heads, inverse=True)
        state[name] = tensor.clone()
    return state
