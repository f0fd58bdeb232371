"""The `config.json` keys every family reads the same way: the shapes, the norms' epsilon,
the RoPE settings in either spelling, and the settings refused whatever the family."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .family import Family

_ACTIVATIONS = ("silu", "swish")  # one function (transformers' ACT2FN maps both to SiLU)
_ORIGINAL_LENGTH = ("llama3", "yarn", "longrope")  # the RoPE types that name the trained context


def read_common(config: dict[str, Any], family: Family) -> dict[str, Any]:
    """The `ModelArgs` fields every family reads alike (KeyError for a missing shape)."""
    theta, scaling = read_rope(config, family.rope_theta)
    return dict(
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        intermediate_size=config["intermediate_size"],
        num_attention_heads=config["num_attention_heads"],
        vocab_size=config["vocab_size"],
        num_key_value_heads=config.get("num_key_value_heads"),
        head_dim=config.get("head_dim"),
        rms_norm_eps=config.get("rms_norm_eps", family.rms_norm_eps),
        rope_theta=theta,
        rope_scaling=scaling,
        rope_traditional=config.get("rope_traditional", False),
        max_position_embeddings=config.get("max_position_embeddings"),
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        model_type=family.model_type,
        head_vocab_size=config.get("head_vocab_size"),
        feature_layers=config.get("feature_layers"),
        quantization=config.get("quantization"),
    )


def read_rope(config: dict[str, Any], default_theta: float) -> tuple[Any, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) as transformers reads them. Hub checkpoints written before
    transformers 5 keep `rope_theta` and `rope_scaling` top-level; transformers 5 writes one
    `rope_parameters` object holding both. A `rope_scaling` replaces `rope_parameters`, a
    theta inside the object wins over a top-level one, a top-level
    `original_max_position_embeddings` over the object's (all as in transformers). The
    scaling comes back as {"rope_type": ..., its numbers}, None for plain RoPE."""
    for key in ("rope_scaling", "rope_parameters"):
        value = config.get(key)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{key} must be an object, got {value!r}")
    rope = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", config.get("rope_theta", default_theta))
    kind = rope.pop("rope_type", rope.get("type", "default"))
    rope.pop("type", None)
    partial = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ConfigError(f"partial_rotary_factor {partial!r} (RoPE on part of each head) is not supported")
    rope.pop("partial_rotary_factor", None)
    if kind == "default":
        return theta, None
    if kind in _ORIGINAL_LENGTH:
        original = config.get("original_max_position_embeddings",
                              rope.get("original_max_position_embeddings", config.get("max_position_embeddings")))
        if original is not None:
            rope["original_max_position_embeddings"] = original
    return theta, {"rope_type": kind, **rope}


def check_honoured(config: dict[str, Any], model_type: str) -> None:
    """Refuse, by name, settings that transformers applies and the blocks here do not (the
    logits would silently differ)."""
    act = config.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"hidden_act {act!r} is not supported (the {model_type} blocks here use SiLU)")
    quant = config.get("quantization_config")
    if quant is not None and not isinstance(quant, dict):
        raise ConfigError(f"quantization_config must be an object, got {quant!r}")
    if isinstance(quant, dict) and quant.get("quant_method") not in (None, "mlx", "affine"):
        raise ConfigError(f"weights quantized with {quant.get('quant_method')!r} are not supported; "
                          "convert the full-precision checkpoint")
