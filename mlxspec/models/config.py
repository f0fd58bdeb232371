"""`ModelArgs`: the shape of a model of one of the port's architecture families (Mistral,
Llama, Mixtral, Qwen2, Qwen3), read from HF `config.json` or Mistral's `params.json`, and
validated before any weight is touched (the field checks: `config_checks`; what each family
reads: `families`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnsupportedModelError
from ..reading import JSON_LIMIT, read_file
from ..validate import is_int
from .config_checks import MAX_DIM, check_options, check_quantization, check_types
from .families import family
from .families.common import check_honoured, read_common
from .families.mistral import read_params
from .rope_scaling import check_scaling


@dataclass
class ModelArgs:
    """Hyper-parameters of a decoder of the port's families (names follow HF `config.json`).
    The families differ only in the options below; `Model` builds whichever are set."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # None: plain RoPE; else {"rope_type": linear | dynamic | llama3 | yarn | longrope, ...}
    # (see `rope_scaling`).
    rope_scaling: dict[str, Any] | None = None
    # False: HF "rotate-half" layout of q/k weights; True: Mistral/llama.cpp interleaved pairs.
    rope_traditional: bool = False
    sliding_window: int | None = None
    max_position_embeddings: int | None = None
    tie_word_embeddings: bool = False
    model_type: str = "mistral"
    # Biases on all four attention projections (Llama's and Qwen3's `attention_bias`), on
    # the query/key/value projections only (Qwen2), on the feed-forward (Llama's `mlp_bias`).
    attention_bias: bool = False
    qkv_bias: bool = False
    mlp_bias: bool = False
    # An RMSNorm over each head of the queries and keys before RoPE (Qwen3).
    qk_norm: bool = False
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
        check_options(self)
        check_scaling(self.rope_scaling, self.head_dim, self.max_position_embeddings)
        check_quantization(self.quantization)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "ModelArgs":
        """Build from a HF / mlx-lm `config.json` dictionary (`UnsupportedModelError` for an
        architecture or setting the port does not implement)."""
        model_type = config.get("model_type")
        if model_type is None:
            archs = config.get("architectures")
            named = archs[0] if isinstance(archs, list) and archs else archs
            raise ConfigError(f"config.json has no model_type (architectures: {named!r})")
        fam = family(model_type)
        check_honoured(config, model_type)
        try:
            return cls(**{**read_common(config, fam), **fam.read_hf(config)})
        except KeyError as missing:
            raise ConfigError(f"config.json lacks required key {missing}") from None

    @classmethod
    def from_mistral_params(cls, params: dict[str, Any]) -> "ModelArgs":
        """Build from Mistral's `params.json` (reference implementation layout; see
        `families.mistral.read_params`)."""
        return cls(**read_params(params))

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` dictionary that mlx-lm and mlxspec both read back (RoPE settings
        top-level, in the spelling both read)."""
        config = {k: v for k, v in asdict(self).items() if v is not None}
        fam = family(self.model_type)
        config.update(fam.write_hf(self))
        config["architectures"] = [fam.architecture]
        return config


def port_supports(config: dict[str, Any]) -> bool:
    """Whether the port runs the model a `config.json` dictionary describes: False for an
    architecture or a setting it does not implement (another implementation may run it),
    True otherwise, a config it will refuse as broken included (that error is the port's to
    report)."""
    if not isinstance(config, dict):
        return False
    try:
        ModelArgs.from_hf_config(config)
    except UnsupportedModelError:
        return False
    except ConfigError:
        return True
    return True


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
                raise type(exc)(f"{path}: {exc}") from None
    raise ConfigError(f"{model_dir}: no config.json or params.json found")
