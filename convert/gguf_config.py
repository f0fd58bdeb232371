"""A GGUF file's model shape: its metadata (`{arch}.*` keys) as `ModelArgs`, each value type-
and range-checked. The architecture names the family (`families.GGUF_ARCHITECTURES`), which
reads its own keys; RoPE scaling is read here for all: a `rope.scaling.type` (linear, yarn),
or llama.cpp's `rope_freqs` tensor (Llama 3's scaled frequencies as per-dimension factors),
which becomes a fixed-factor `longrope` scaling that transformers and mlx-lm read alike."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlxspec.errors import ConfigError
from mlxspec.models.config import ModelArgs
from mlxspec.models.families import GGUF_ARCHITECTURES
from mlxspec.validate import is_int

from .gguf import ROPE_FREQS, GGUFFile, read_tensor, show


def model_args(gguf: GGUFFile) -> ModelArgs:
    """The model's shape from the GGUF metadata, each value type- and range-checked."""
    arch = gguf.get("general.architecture")
    family = GGUF_ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if family is None:
        raise ConfigError(f"{gguf.path}: unsupported GGUF architecture {show(arch)} "
                                    f"(supported: {', '.join(GGUF_ARCHITECTURES)})")

    def key(name: str, default: Any = KeyError, kind: type = int) -> Any:
        return _positive(gguf, f"{arch}.{name}", default, kind)

    tokens = gguf.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens) if isinstance(tokens, list) else 0
    heads, hidden = key("attention.head_count"), key("embedding_length")
    shape = dict(
        hidden_size=hidden,
        num_hidden_layers=key("block_count"),
        intermediate_size=key("feed_forward_length"),
        num_attention_heads=heads,
        num_key_value_heads=key("attention.head_count_kv", heads),
        head_dim=key("attention.key_length", hidden // heads),
        vocab_size=_positive(gguf, f"{arch}.vocab_size", n_tokens or KeyError, int),
        rms_norm_eps=float(f"{key('attention.layer_norm_rms_epsilon', 1e-5, float):.7g}"),
        rope_theta=float(key("rope.freq_base", 10000.0, float)),
        max_position_embeddings=key("context_length", None),
        tie_word_embeddings="output.weight" not in {t.name for t in gguf.tensors},
        model_type=family.model_type,
    )
    shape["rope_scaling"] = rope_scaling(gguf, arch, key, shape["max_position_embeddings"])
    shape.update(family.read_gguf(key, {t.name for t in gguf.tensors}))
    try:
        return ModelArgs(**shape)
    except ConfigError as exc:  # what ModelArgs checks across values (heads and kv heads, even head_dim)
        raise ConfigError(f"{gguf.path}: {exc}") from None


def rope_scaling(gguf: GGUFFile, arch: str, key: Any, context: int | None) -> dict[str, Any] | None:
    """The RoPE scaling the file describes (see the module docstring), None for plain RoPE."""
    kind = gguf.get(f"{arch}.rope.scaling.type", "none")
    freqs = next((t for t in gguf.tensors if t.name == ROPE_FREQS), None)
    if freqs is not None:
        if kind not in ("none", None):
            raise ConfigError(f"{gguf.path}: both a {ROPE_FREQS} tensor and RoPE scaling {show(kind)}")
        factors = read_tensor(gguf, freqs)
        if isinstance(factors, tuple) or factors.ndim != 1 or factors.dtype == np.uint16:
            raise ConfigError(f"{gguf.path}: {ROPE_FREQS} must be a vector of F32 or F16 factors")
        factors = [float(f) for f in factors]
        scaling = {"rope_type": "longrope", "factor": 1.0, "short_factor": factors, "long_factor": factors}
        return scaling if context is None else {**scaling, "original_max_position_embeddings": context}
    if kind in ("none", None):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": key("rope.scaling.factor", KeyError, float)}
    if kind == "yarn":
        scaling = {"rope_type": "yarn", "factor": key("rope.scaling.factor", KeyError, float),
                   "original_max_position_embeddings": key("rope.scaling.original_context_length", KeyError, int)}
        for name in ("beta_fast", "beta_slow"):
            if key(f"rope.scaling.yarn_{name}", None, float) is not None:
                scaling[name] = key(f"rope.scaling.yarn_{name}", None, float)
        return scaling
    raise ConfigError(f"{gguf.path}: RoPE scaling {show(kind)} is not supported (linear and yarn are)")


def _positive(gguf: GGUFFile, key: str, default: Any, kind: type) -> Any:
    """A positive int (or finite positive number when `kind` is float) from the metadata;
    `default` when absent (KeyError: required; 0: absent and 0 both mean none)."""
    value = gguf.get(key, default)
    if value is KeyError:
        raise ConfigError(f"{gguf.path}: GGUF metadata lacks {key}")
    if value is None or (default == 0 and value == 0):
        return value
    numeric = is_int(value) or (kind is float and isinstance(value, float) and math.isfinite(value))
    if not numeric or value <= 0:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{gguf.path}: GGUF metadata {key} must be {what} > 0, got {show(value)}")
    return value
