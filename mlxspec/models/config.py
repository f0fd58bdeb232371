"""`ModelArgs`: the shape of a Mistral/Llama-family model, read from HF `config.json`
or Mistral's `params.json`, and validated before any weight is touched."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SUPPORTED_ARCHITECTURES = ("mistral", "llama")


@dataclass
class ModelArgs:
    """Hyper-parameters of a Mistral-family decoder (names follow HF `config.json`)."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # False: HF "rotate-half" layout of q/k weights; True: Mistral/llama.cpp interleaved pairs.
    rope_traditional: bool = False
    sliding_window: int | None = None
    max_position_embeddings: int | None = None
    tie_word_embeddings: bool = False
    model_type: str = "mistral"
    # Drafts only: the head scores this many tokens (`lm_head.token_ids`), see SubsetHead.
    head_vocab_size: int | None = None
    quantization: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for shapes the model cannot be built with."""
        if self.model_type not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"unsupported architecture {self.model_type!r} "
                f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        for name in ("hidden_size", "num_hidden_layers", "intermediate_size",
                     "num_attention_heads", "vocab_size", "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.head_vocab_size is not None and not 0 < self.head_vocab_size <= self.vocab_size:
            raise ConfigError(f"head_vocab_size must be in 1..vocab_size, got {self.head_vocab_size}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ConfigError(f"sliding_window must be positive, got {self.sliding_window}")

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "ModelArgs":
        """Build from a HF / mlx-lm `config.json` dictionary."""
        model_type = config.get("model_type")
        if model_type is None:
            archs = config.get("architectures") or ["<none>"]
            raise ConfigError(f"config.json has no model_type (architectures: {archs[0]})")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"unsupported architecture {model_type!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        # transformers >= 5 writes RoPE settings as `rope_parameters`, older ones as top-level keys.
        rope = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
        if rope.get("rope_type", rope.get("type")) not in (None, "default"):
            raise ConfigError(f"unsupported RoPE scaling {rope!r}")
        rope_theta = config.get("rope_theta", rope.get("rope_theta", 10000.0))
        try:
            return cls(
                hidden_size=config["hidden_size"],
                num_hidden_layers=config["num_hidden_layers"],
                intermediate_size=config["intermediate_size"],
                num_attention_heads=config["num_attention_heads"],
                vocab_size=config["vocab_size"],
                num_key_value_heads=config.get("num_key_value_heads"),
                head_dim=config.get("head_dim"),
                rms_norm_eps=config.get("rms_norm_eps", 1e-5),
                rope_theta=rope_theta,
                rope_traditional=config.get("rope_traditional", False),
                sliding_window=config.get("sliding_window"),
                max_position_embeddings=config.get("max_position_embeddings"),
                tie_word_embeddings=config.get("tie_word_embeddings", False),
                model_type=model_type,
                head_vocab_size=config.get("head_vocab_size"),
                quantization=config.get("quantization"),
            )
        except KeyError as missing:
            raise ConfigError(f"config.json lacks required key {missing}") from None

    @classmethod
    def from_mistral_params(cls, params: dict[str, Any]) -> "ModelArgs":
        """Build from Mistral's `params.json` (reference implementation layout).

        Mistral's checkpoints keep q/k in the interleaved RoPE layout, hence `rope_traditional`.
        """
        if "moe" in params:
            raise ConfigError("params.json describes a mixture-of-experts model (Mixtral), not supported yet")
        try:
            return cls(
                hidden_size=params["dim"],
                num_hidden_layers=params["n_layers"],
                intermediate_size=params["hidden_dim"],
                num_attention_heads=params["n_heads"],
                vocab_size=params["vocab_size"],
                num_key_value_heads=params.get("n_kv_heads"),
                head_dim=params.get("head_dim"),
                rms_norm_eps=params.get("norm_eps", 1e-5),
                rope_theta=params.get("rope_theta", 10000.0),
                rope_traditional=True,
                sliding_window=params.get("sliding_window"),
                max_position_embeddings=params.get("max_seq_len"),
                tie_word_embeddings=False,
                model_type="mistral",
            )
        except KeyError as missing:
            raise ConfigError(f"params.json lacks required key {missing}") from None

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` dictionary that mlx-lm and mlxspec both read back."""
        config = {k: v for k, v in asdict(self).items() if v is not None}
        config["architectures"] = [
            "MistralForCausalLM" if self.model_type == "mistral" else "LlamaForCausalLM"
        ]
        return config


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning I/O and syntax problems into a `ConfigError`."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def load_model_args(model_dir: Path) -> ModelArgs:
    """Read `config.json` (HF / mlx-lm) or `params.json` (Mistral) from `model_dir`."""
    for name, parse in (("config.json", ModelArgs.from_hf_config), ("params.json", ModelArgs.from_mistral_params)):
        path = model_dir / name
        if path.is_file():
            config = read_json(path)
            try:
                return parse(config)
            except ConfigError as exc:
                raise ConfigError(f"{model_dir}: {exc}") from None
    raise ConfigError(f"{model_dir}: no config.json or params.json found")
