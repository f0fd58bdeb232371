"""Qwen2 and Qwen2.5 (Yang et al. 2024): the Llama blocks with biases on the query, key and
value projections (not the output's), often tied embeddings, and a sliding window that
transformers applies to layers `max_window_layers`.. when `use_sliding_window` (or to those
`layer_types` names). The blocks here run one window for every layer or none: a window on
some layers only is refused (a ConfigError: mlx-lm's Qwen2 ignores windows, so the port's
refusal is the honest answer). llama.cpp stores Qwen's q/k rows in HF's order (NEOX RoPE)."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...validate import is_int
from .family import Family, GGUFKey

_KINDS = ("full_attention", "sliding_attention")


def window(config: dict[str, Any]) -> Any:
    """The window every layer has (None: none), as transformers' Qwen2/Qwen3 read it."""
    use = config.get("use_sliding_window", False)
    if not isinstance(use, bool):
        raise ConfigError(f"use_sliding_window must be true or false, got {use!r}")
    size = config.get("sliding_window", 4096) if use else None
    layers, types = config.get("num_hidden_layers"), config.get("layer_types")
    if types is None:
        first = config.get("max_window_layers", 28)
        if not is_int(first) or first < 0:
            raise ConfigError(f"max_window_layers must be an integer >= 0, got {first!r}")
        types = ["sliding_attention" if size is not None and i >= first else "full_attention"
                 for i in range(layers if is_int(layers) else 0)]
    if not isinstance(types, list) or not all(t in _KINDS for t in types) or (is_int(layers) and len(types) != layers):
        raise ConfigError(f"layer_types must name {', '.join(_KINDS)} for each of the {layers!r} layers")
    windowed = types.count("sliding_attention")
    if size is None or windowed == 0:
        return None
    if windowed == len(types):
        return size
    raise ConfigError(f"a sliding window on {windowed} of {len(types)} layers only is not supported "
                      "(the blocks here window every layer or none)")


def write_window(args: Any) -> dict[str, Any]:
    """The keys that read back as `args.sliding_window` on every layer."""
    kind = "full_attention" if args.sliding_window is None else "sliding_attention"
    return {"use_sliding_window": args.sliding_window is not None, "sliding_window": args.sliding_window,
            "max_window_layers": 0 if args.sliding_window is not None else args.num_hidden_layers,
            "layer_types": [kind] * args.num_hidden_layers}


def _read_hf(config: dict[str, Any]) -> dict[str, Any]:
    return {"qkv_bias": True, "sliding_window": window(config)}


def _read_gguf(key: GGUFKey, names: set[str]) -> dict[str, Any]:
    return {"qkv_bias": True}


FAMILY = Family(
    model_type="qwen2", architecture="Qwen2ForCausalLM", read_hf=_read_hf,
    options=frozenset({"qkv_bias", "sliding_window"}), write_hf=write_window,
    gguf_architecture="qwen2", gguf_interleaved=False, read_gguf=_read_gguf,
)
