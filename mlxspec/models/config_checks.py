"""The range and type checks of `ModelArgs`' fields (`args` below is a `ModelArgs`): every
value a model is built from is checked here first, so a bad config fails with one line
naming the field."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from ..validate import is_int, is_real
from .families import family

QUANT_BITS = (2, 3, 4, 5, 6, 8)
MAX_DIM = 2**31 - 1  # MLX shapes and slice indices are 32-bit
_MAX_WINDOW = 2**30  # the rolling cache adds the rollback slots to the window
QUANT_GROUPS = (32, 64, 128)
_MAX_EXPERTS = 1024
_MAX_TAPS = 8  # target blocks a feature draft may read


def _is_finite(value: Any) -> bool:
    return is_real(value) and math.isfinite(value)


def check_types(args: Any) -> None:
    """Every field of `ModelArgs` has the type and range it needs (before anything is derived)."""
    family(args.model_type)  # raises for an architecture the port does not know
    for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size"):
        if not is_int(getattr(args, name)) or not 0 < getattr(args, name) <= MAX_DIM:
            raise ConfigError(f"{name} must be a positive integer up to 2**31-1 (MLX shapes are 32-bit), "
                              f"got {getattr(args, name)!r}")
    for name in ("num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings", "head_vocab_size"):
        value, most = getattr(args, name), _MAX_WINDOW if name == "sliding_window" else MAX_DIM
        if value is not None and (not is_int(value) or value <= 0 or (name != "max_position_embeddings"
                                                                      and value > most)):
            raise ConfigError(f"{name} must be a positive integer (or absent) up to {most}, got {value!r}")
    check_experts(args)
    check_feature_layers(args.feature_layers)
    for name, most in (("rms_norm_eps", 1.0), ("rope_theta", 1e30)):
        value = getattr(args, name)
        if not _is_finite(value) or not 0 < value < most:
            raise ConfigError(f"{name} must be a finite number in (0, {most:g}), got {value!r}")
    for name in ("rope_traditional", "tie_word_embeddings", "attention_bias", "qkv_bias", "mlp_bias", "qk_norm"):
        if not isinstance(getattr(args, name), bool):
            raise ConfigError(f"{name} must be true or false, got {getattr(args, name)!r}")


def check_options(args: Any) -> None:
    """Only the optional parts of the blocks that the family has (`Family.options`): a Llama
    has no window, a Mistral no biases, ..."""
    used = {"attention_bias": args.attention_bias, "qkv_bias": args.qkv_bias, "mlp_bias": args.mlp_bias,
            "qk_norm": args.qk_norm, "sliding_window": args.sliding_window is not None}
    extra = next((name for name, on in used.items() if on and name not in family(args.model_type).options), None)
    if extra == "sliding_window":
        raise ConfigError(f"sliding_window is not part of the {args.model_type} architecture (transformers ignores "
                          "it there); use model_type 'mistral' for windowed attention")
    if extra is not None:
        raise ConfigError(f"{extra} is not part of the {args.model_type} architecture")


def check_experts(args: Any) -> None:
    """A mixture of experts (mixtral) names how many experts each layer has and how many
    each token reads; the dense architectures name neither."""
    experts, used = args.num_local_experts, args.num_experts_per_tok
    if "experts" not in family(args.model_type).options:
        if experts is not None or used is not None:
            raise ConfigError(f"num_local_experts / num_experts_per_tok describe a mixture of experts, "
                              f"not a {args.model_type} model")
        return
    if not is_int(experts) or not 0 < experts <= _MAX_EXPERTS:
        raise ConfigError(f"num_local_experts must be an integer in 1..{_MAX_EXPERTS}, got {experts!r}")
    if not is_int(used) or not 0 < used <= experts:
        raise ConfigError(f"num_experts_per_tok must be an integer in 1..num_local_experts ({experts}), got {used!r}")


def check_feature_layers(layers: Any) -> None:
    """A feature draft's `feature_layers`: a non-empty, strictly ascending list of block indices
    (whether the target has them is checked when the draft meets it)."""
    if layers is None:
        return
    if (not isinstance(layers, list) or not layers or len(layers) > _MAX_TAPS
            or not all(is_int(i) and 0 <= i < MAX_DIM for i in layers)
            or any(a >= b for a, b in zip(layers, layers[1:]))):
        raise ConfigError(f"feature_layers must be a list of 1..{_MAX_TAPS} ascending block indices, got {layers!r}")


def check_quantization(quant: Any) -> None:
    """mlx-lm's `quantization` block: affine bits/group size, optional per-layer overrides."""
    if quant is None:
        return
    if not isinstance(quant, dict):
        raise ConfigError(f"quantization must be an object, got {quant!r}")
    odd = next((k for k, v in quant.items() if k not in ("bits", "group_size", "mode")
                and not isinstance(v, (dict, bool))), None)
    if odd is not None:
        raise ConfigError(f"quantization[{odd!r}] must be an object (or false), got {quant[odd]!r}")
    for where, entry in [("quantization", quant), *((f"quantization[{k!r}]", v) for k, v in quant.items()
                                                    if isinstance(v, dict))]:
        bits, group = entry.get("bits", 4), entry.get("group_size", 64)
        if not is_int(bits) or bits not in QUANT_BITS:
            raise ConfigError(f"{where}: bits must be one of {QUANT_BITS}, got {bits!r}")
        if not is_int(group) or group not in QUANT_GROUPS:
            raise ConfigError(f"{where}: group_size must be one of {QUANT_GROUPS}, got {group!r}")
        if entry.get("mode", "affine") != "affine":
            raise ConfigError(f"{where}: quantization mode {entry.get('mode')!r} is not supported (affine is)")
