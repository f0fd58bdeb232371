"""`ModelArgs`: the shape of a Mistral/Llama/Mixtral-family model, read from HF
`config.json` or Mistral's `params.json`, and validated before any weight is touched
(the field checks: `config_checks`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..reading import JSON_LIMIT, read_file
from ..validate import is_int
from .config_checks import MAX_DIM, SUPPORTED_ARCHITECTURES, check_quantization, check_types

# Config keys that change the computation and that the Mistral/Llama blocks here do not
# implement: refused by name when set to anything but the value shown.
_UNSUPPORTED_HF = {"attention_bias": False, "mlp_bias": False}
_ACTIVATIONS = ("silu", "swish")
_ARCHITECTURE_CLASSES = {"mistral": "MistralForCausalLM", "llama": "LlamaForCausalLM", "mixtral": "MixtralForCausalLM"}  # one function (transformers' ACT2FN maps both to SiLU)
_UNSUPPORTED_MISTRAL = {"vision_encoder": "a vision model",
                        "lora": "LoRA adapters", "quantization": "quantized weights", "yarn": "YaRN RoPE scaling",
                        "rope_scaling": "RoPE scaling"}


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
    # Feature drafts only: the target blocks whose outputs the draft reads beside the target's
    # final hidden state (EAGLE-3's fused features), ascending; None: the final state alone.
    feature_layers: list[int] | None = None
    # Mixtral only: experts per layer and experts each token reads (top-k routing).
    num_local_experts: int | None = None
    num_experts_per_tok: int | None = None
    quantization: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_types(self)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for values of the wrong type or range, and for shapes the model
        cannot be built with."""
        check_types(self)
        for name in ("num_key_value_heads", "head_dim"):
            if not is_int(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        for name in ("num_attention_heads", "num_key_value_heads"):
            if getattr(self, name) * self.head_dim > MAX_DIM:
                raise ConfigError(f"{name} x head_dim = {getattr(self, name) * self.head_dim} is more than MLX "
                                  "can index (2**31-1)")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.head_vocab_size is not None and not 0 < self.head_vocab_size <= self.vocab_size:
            raise ConfigError(f"head_vocab_size must be in 1..vocab_size, got {self.head_vocab_size}")
        if self.model_type == "mixtral" and self.head_vocab_size is not None:
            raise ConfigError("head_vocab_size is for dense drafts, not a mixture of experts")
        if self.sliding_window is not None and self.model_type == "llama":
            raise ConfigError("sliding_window is not part of the llama architecture (transformers' Llama ignores "
                              "it); use model_type 'mistral' for windowed attention")
        check_quantization(self.quantization)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "ModelArgs":
        """Build from a HF / mlx-lm `config.json` dictionary."""
        model_type = config.get("model_type")
        if model_type is None:
            archs = config.get("architectures")
            named = archs[0] if isinstance(archs, list) and archs else archs
            raise ConfigError(f"config.json has no model_type (architectures: {named!r})")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"unsupported architecture {model_type!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        check_honoured(config, model_type)
        rope_theta = _rope_theta(config)
        try:
            return cls(
                hidden_size=config["hidden_size"],
                num_hidden_layers=config["num_hidden_layers"],
                intermediate_size=config["intermediate_size"],
                num_attention_heads=config["num_attention_heads"],
                vocab_size=config["vocab_size"],
                num_key_value_heads=config.get("num_key_value_heads"),
                head_dim=config.get("head_dim"),
                rms_norm_eps=config.get("rms_norm_eps", 1e-6),  # transformers' default, both architectures
                rope_theta=rope_theta,
                rope_traditional=config.get("rope_traditional", False),
                sliding_window=_window(config, model_type),
                max_position_embeddings=config.get("max_position_embeddings"),
                tie_word_embeddings=config.get("tie_word_embeddings", False),
                model_type=model_type,
                head_vocab_size=config.get("head_vocab_size"),
                feature_layers=config.get("feature_layers"),
                num_local_experts=config.get("num_local_experts", 8) if model_type == "mixtral" else None,
                num_experts_per_tok=config.get("num_experts_per_tok", 2) if model_type == "mixtral" else None,
                quantization=config.get("quantization"),
            )
        except KeyError as missing:
            raise ConfigError(f"config.json lacks required key {missing}") from None

    @classmethod
    def from_mistral_params(cls, params: dict[str, Any]) -> "ModelArgs":
        """Build from Mistral's `params.json` (reference implementation layout).

        Mistral's checkpoints keep q/k in the interleaved RoPE layout, hence `rope_traditional`.
        A `moe` block ({"num_experts", "num_experts_per_tok"}) makes it a Mixtral.
        """
        for key, what in _UNSUPPORTED_MISTRAL.items():
            if params.get(key) not in (None, False):
                raise ConfigError(f"params.json describes {what} ({key!r}), which mlxspec does not support yet")
        moe = params.get("moe")
        if moe is not None and not isinstance(moe, dict):
            raise ConfigError(f"params.json: moe must be an object, got {moe!r}")
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
                model_type="mistral" if moe is None else "mixtral",
                num_local_experts=None if moe is None else moe.get("num_experts"),
                num_experts_per_tok=None if moe is None else moe.get("num_experts_per_tok", 2),
            )
        except KeyError as missing:
            raise ConfigError(f"params.json lacks required key {missing}") from None

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` dictionary that mlx-lm and mlxspec both read back."""
        config = {k: v for k, v in asdict(self).items() if v is not None}
        if self.model_type in ("mistral", "mixtral"):
            config["sliding_window"] = self.sliding_window  # null, not absent: absent means 4096
        config["architectures"] = [_ARCHITECTURE_CLASSES[self.model_type]]
        return config


def _window(config: dict[str, Any], model_type: str) -> Any:
    """The sliding window transformers applies: its Mistral windows 4096 tokens unless told
    otherwise (null: none), its Mixtral none unless told, its Llama never, whatever the config says."""
    if model_type == "mistral":
        return config.get("sliding_window", 4096)
    return config.get("sliding_window") if model_type == "mixtral" else None


def check_honoured(config: dict[str, Any], model_type: str) -> None:
    """Refuse, by name, config settings that transformers applies for this architecture and
    the blocks here do not (the logits would silently differ)."""
    act = config.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"hidden_act {act!r} is not supported (the {model_type} blocks here use SiLU)")
    if model_type == "llama":  # transformers' Mistral has no biases, whatever the config says
        for key, default in _UNSUPPORTED_HF.items():
            if config.get(key, default) != default:
                raise ConfigError(f"{key} = {config[key]!r} is not supported (biases in the llama blocks)")
    quant = config.get("quantization_config")
    if quant is not None and not isinstance(quant, dict):
        raise ConfigError(f"quantization_config must be an object, got {quant!r}")
    if isinstance(quant, dict) and quant.get("quant_method") not in (None, "mlx", "affine"):
        raise ConfigError(f"weights quantized with {quant.get('quant_method')!r} are not supported; "
                          "convert the full-precision checkpoint")


def _rope_theta(config: dict[str, Any]) -> Any:
    """rope_theta from either spelling (transformers >= 5 nests RoPE settings in
    `rope_parameters`, older ones keep `rope_theta` and `rope_scaling` top-level); any
    scaling other than the default is refused."""
    rope: dict[str, Any] = {}
    for key in ("rope_scaling", "rope_parameters"):
        value = config.get(key)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{key} must be an object, got {value!r}")
        rope.update(value or {})
    if (rope.get("rope_type") or rope.get("type")) not in (None, "default"):
        raise ConfigError(f"unsupported RoPE scaling {rope!r}")
    return config.get("rope_theta", rope.get("rope_theta", 10000.0))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning I/O and syntax problems into a `ConfigError`."""
    try:
        data = json.loads(read_file(path, JSON_LIMIT).decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:  # e.g. a number of more digits than Python converts
        raise ConfigError(f"{path} is not a usable JSON file ({str(exc).splitlines()[0][:80]})") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a configuration") from None
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
                raise ConfigError(f"{path}: {exc}") from None
    raise ConfigError(f"{model_dir}: no config.json or params.json found")
