"""What a plan knows of a model without its weights: the shape its config gives (layers, key/value
heads, head size, sliding window, experts) and a record of every stored tensor (name, shape,
dtype, bytes), read from safetensors or GGUF headers or the Hub's metadata. Invariant: building a
`ModelShape` never reads a weight."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models.config import ModelArgs
from ..validate import is_int

FLOAT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class Tensor:
    """One stored tensor: `dtype` is the safetensors spelling (F32, BF16, U32...) or a GGUF type
    name (Q4_0, Q6_K, F16...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelShape:
    """A model's shape as the footprint counts it. `window` caps the cached tokens of the
    `windowed_layers` (a sliding window); `taps` is how many target blocks a feature draft
    reads beside the final state (0 otherwise)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    window: int | None = None
    windowed_layers: int = 0
    experts: int | None = None
    experts_per_token: int | None = None
    tied: bool = False
    context: int | None = None
    quantization: dict[str, Any] | None = None
    feature_draft: bool = False
    taps: int = 0
    tensors: list[Tensor] = field(default_factory=list)
    stored_format: str = "safetensors"


def from_args(name: str, args: ModelArgs, tensors: list[Tensor], feature_draft: bool = False) -> ModelShape:
    """The shape of a model of the port's families."""
    window = args.sliding_window
    return ModelShape(name=name, layers=args.num_hidden_layers, hidden=args.hidden_size,
                      heads=args.num_attention_heads, kv_heads=int(args.num_key_value_heads or 0),
                      head_dim=int(args.head_dim or 0), intermediate=args.intermediate_size, vocab=args.vocab_size,
                      window=window, windowed_layers=args.num_hidden_layers if window else 0,
                      experts=args.num_local_experts, experts_per_token=args.num_experts_per_tok,
                      tied=args.tie_word_embeddings, context=args.max_position_embeddings,
                      quantization=args.quantization, feature_draft=feature_draft,
                      taps=len(args.feature_layers or []), tensors=tensors)


def _positive(config: dict[str, Any], where: str, *keys: str, default: Any = KeyError) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            if not is_int(value) or value <= 0:
                raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
            return value
    if default is KeyError:
        raise ConfigError(f"{where}: config.json lacks {keys[0]!r}, which the plan needs")
    return default


def from_config(name: str, config: dict[str, Any], tensors: list[Tensor]) -> ModelShape:
    """The shape of an architecture outside the port (run by mlx-lm), read from the keys most
    configs share (`text_config` first when there is one); a sliding window on every n-th layer
    (`sliding_window_pattern`) counts n-1 of n layers as windowed."""
    config = {**config, **config["text_config"]} if isinstance(config.get("text_config"), dict) else config
    layers = _positive(config, name, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _positive(config, name, "hidden_size", "d_model", "n_embd")
    heads = _positive(config, name, "num_attention_heads", "n_head")
    kv_heads = _positive(config, name, "num_key_value_heads", "n_kv_heads", default=heads)
    window = _positive(config, name, "sliding_window", default=None)
    pattern = _positive(config, name, "sliding_window_pattern", default=1)
    windowed = 0 if window is None or config.get("use_sliding_window") is False else \
        (layers if pattern == 1 else layers - layers // pattern)
    return ModelShape(name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                      head_dim=_positive(config, name, "head_dim", default=hidden // heads),
                      intermediate=_positive(config, name, "intermediate_size", default=4 * hidden),
                      vocab=_positive(config, name, "vocab_size"), window=window, windowed_layers=windowed,
                      experts=_positive(config, name, "num_local_experts", "num_experts", default=None),
                      experts_per_token=_positive(config, name, "num_experts_per_tok", default=None),
                      tied=bool(config.get("tie_word_embeddings", False)),
                      context=_positive(config, name, "max_position_embeddings", default=None),
                      quantization=config.get("quantization") if isinstance(config.get("quantization"), dict) else None,
                      tensors=tensors)
