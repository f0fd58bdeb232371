"""A GGUF file's model shape: its metadata (`llama.*` / `mistral.*` keys) as `ModelArgs`,
each value type- and range-checked. llama.cpp writes Mixtral as `llama` with an
`expert_count`; that becomes a mixtral here."""

from __future__ import annotations

import math
from typing import Any

from mlxspec.errors import ConfigError
from mlxspec.models.config import ModelArgs
from mlxspec.validate import is_int

from .gguf import GGUFFile, show

SUPPORTED_ARCHITECTURES = ("llama", "mistral")


def model_args(gguf: GGUFFile) -> ModelArgs:
    """The model's shape from the GGUF metadata (`llama.*` keys), each value type- and range-checked."""
    arch = gguf.get("general.architecture")
    if not isinstance(arch, str) or arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(f"{gguf.path}: unsupported GGUF architecture {show(arch)} "
                          f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    if gguf.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise ConfigError(f"{gguf.path}: RoPE scaling {show(gguf.get(f'{arch}.rope.scaling.type'))} is not supported")

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
        # llama.cpp's llama architecture never windows attention, whatever the metadata says
        sliding_window=key("attention.sliding_window", None) if arch == "mistral" else None,
        max_position_embeddings=key("context_length", None),
        tie_word_embeddings="output.weight" not in {t.name for t in gguf.tensors},
        model_type="llama" if arch == "llama" else "mistral",
    )
    shape.update(_experts(gguf, arch))
    try:
        return ModelArgs(**shape)
    except ConfigError as exc:  # what ModelArgs checks across values (heads and kv heads, even head_dim)
        raise ConfigError(f"{gguf.path}: {exc}") from None


def _experts(gguf: GGUFFile, arch: str) -> dict[str, Any]:
    """A mixture of experts (llama.cpp writes Mixtral as `llama` with `expert_count`) as a
    mixtral; nothing for a dense model."""
    experts = _positive(gguf, f"{arch}.expert_count", None, int) if gguf.get(f"{arch}.expert_count", 0) else None
    if experts is None:
        return {}
    return dict(model_type="mixtral", num_local_experts=experts, sliding_window=None,
                num_experts_per_tok=_positive(gguf, f"{arch}.expert_used_count", 2, int))


def _positive(gguf: GGUFFile, key: str, default: Any, kind: type) -> Any:
    """A positive int (or finite positive number when `kind` is float) from the metadata;
    `default` when absent (KeyError: required)."""
    value = gguf.get(key, default)
    if value is KeyError:
        raise ConfigError(f"{gguf.path}: GGUF metadata lacks {key}")
    if value is None:
        return None
    numeric = is_int(value) or (kind is float and isinstance(value, float) and math.isfinite(value))
    if not numeric or value <= 0:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{gguf.path}: GGUF metadata {key} must be {what} > 0, got {show(value)}")
    return value
