"""Loading a model of an architecture outside mlxspec's port through mlx-lm's own model
classes, loading and sanitising (an `mlx-community` folder, `mlx_lm convert`'s output or an
HF checkpoint): a `ForeignModel` the engine runs like its own.

mlx-lm 0.32 reads several families' settings only in the spelling written before
transformers 5, which nests RoPE settings in `rope_parameters` (a Qwen2 then gets mlx-lm's
default `rope_theta`, a Llama 3 loses its RoPE scaling, a GPT-NeoX does not load). So the
configuration is given to mlx-lm in the older spelling as well (`mlx_lm_config`); keys
already in it are never changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx

from .errors import CheckpointError, ConfigError
from .models.foreign import ForeignArgs, ForeignModel
from .standard_streams import reopen_closed_descriptors


def _rope_settings(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's `rope_parameters` for the full-attention layers (also when given per
    layer type), or {}."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict):
        return {}
    if isinstance(rope.get("full_attention"), dict):
        return rope["full_attention"]
    return rope


def mlx_lm_config(config: dict[str, Any], weight_names: set[str]) -> dict[str, Any]:
    """The settings to add to `config` so that mlx-lm reads what transformers reads: RoPE's
    base and scaling, partial rotary, the local base of sliding layers, and whether the
    output head is the embedding (from the weights, when the config does not say)."""
    rope, out = _rope_settings(config), {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
        out["rotary_emb_base"] = rope["rope_theta"]  # GPT-NeoX's name
    if rope.get("rope_type", "default") != "default":
        out["rope_scaling"] = {**rope, "type": rope["rope_type"]}
    if "partial_rotary_factor" in rope:
        out["partial_rotary_factor"] = out["rotary_pct"] = rope["partial_rotary_factor"]
    local = (config.get("rope_parameters") or {}).get("sliding_attention") if isinstance(
        config.get("rope_parameters"), dict) else None
    if isinstance(local, dict) and "rope_theta" in local:
        out["rope_local_base_freq"] = local["rope_theta"]
    types = config.get("layer_types")
    if isinstance(types, list) and "sliding_attention" in types:
        out["sliding_window_pattern"] = _window_pattern(types, config)
    out["tie_word_embeddings"] = "lm_head.weight" not in weight_names
    return {k: v for k, v in out.items() if k not in config}


def _window_pattern(types: list[Any], config: dict[str, Any]) -> int:
    """mlx-lm's `sliding_window_pattern` for transformers' `layer_types`: every p-th layer
    global, the others sliding. A layout it cannot say (no global layer, or not periodic)
    is one line, rather than an index error or a wrong mask inside mlx-lm."""
    pattern = types.index("full_attention") + 1 if "full_attention" in types else 0
    periodic = [("full_attention" if (i + 1) % pattern == 0 else "sliding_attention") for i in range(len(types))] \
        if pattern else None
    if periodic != types:
        raise ConfigError(f"{config.get('model_type')}: layer_types {types} is not every n-th layer global, "
                          "the only layout mlx-lm's model class runs")
    return pattern


def _weight_names(folder: Path) -> set[str]:
    """The tensor names of the folder's safetensors files (headers only)."""
    from .convert.safetensors_io import SafetensorsReader

    names: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        names |= set(SafetensorsReader(file).header)
    return names


def known_to_mlx_lm(config: dict[str, Any]) -> bool:
    """Whether mlx-lm has a model class for this configuration's architecture."""
    from mlx_lm.utils import _get_classes

    if not isinstance(config.get("model_type"), str):
        return False
    try:
        _get_classes(config)
    except Exception:  # noqa: BLE001 (mlx-lm raises what a malformed config makes it raise)
        return False
    return True


def load_mlx_lm_lazily(folder: Path, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """mlx-lm's module for the folder (weights mapped, not read yet) and the configuration it
    read; one `CheckpointError` line when it cannot load it."""
    from mlx_lm.utils import load_model

    reopen_closed_descriptors()  # else a weights file may open as descriptor 0
    if not any(folder.glob("model*.safetensors")):
        raise CheckpointError(f"{folder}: no model*.safetensors weights (mlx-lm reads only those)")
    try:
        settings = mlx_lm_config(config, _weight_names(folder))
    except ConfigError as exc:
        raise ConfigError(f"{folder / 'config.json'}: {exc}") from None
    try:
        return load_model(folder, lazy=True, model_config=settings)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, FileNotFoundError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{folder}: mlx-lm cannot load this {config.get('model_type')} checkpoint "
                              f"({reason})") from None


def load_mlx_lm_model(folder: Path, config: dict[str, Any], dtype: mx.Dtype | None = None,
                      dequantize: bool = False) -> ForeignModel:
    """The folder's model through mlx-lm, as a `ForeignModel` (`dtype` casts its floating
    weights; `dequantize` expands quantized layers, see `mlxspec.load_model`)."""
    from mlx_lm.utils import dequantize_model

    lm, read = load_mlx_lm_lazily(folder, config)
    if dequantize and read.get("quantization"):
        lm = dequantize_model(lm)
    if dtype is not None:
        lm.set_dtype(dtype)
    try:
        mx.eval(lm.parameters())
    except (RuntimeError, ValueError) as exc:  # a truncated file shows only when read
        raise CheckpointError(f"{folder}: unreadable weights ({str(exc).splitlines()[0][:200]})") from None
    return ForeignModel(lm, foreign_args(lm, read, dequantize))


def foreign_args(lm: Any, config: dict[str, Any], dequantized: bool) -> ForeignArgs:
    """What the engine reads of the configuration; the vocabulary is the width of the logits."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    vocab = lm(mx.array([[0]])).shape[-1]  # shape only: nothing is computed
    hidden = text.get("hidden_size") or text.get("d_model") or text.get("n_embd") or 0
    context = text.get("max_position_embeddings")
    return ForeignArgs(vocab_size=vocab, hidden_size=int(hidden), num_hidden_layers=len(lm.layers),
                       model_type=str(config.get("model_type")),
                       max_position_embeddings=context if isinstance(context, int) and context > 0 else None,
                       tie_word_embeddings=bool(config.get("tie_word_embeddings")),
                       quantization=None if dequantized else config.get("quantization"))


def unknown_architecture(folder: Path, model_type: Any, port: tuple[str, ...]) -> ConfigError:
    """The one line for an architecture neither the port nor mlx-lm knows."""
    import mlx_lm

    return ConfigError(f"{folder / 'config.json'}: unsupported architecture {model_type!r}: neither mlxspec's "
                       f"port ({', '.join(port)}) nor mlx-lm {mlx_lm.__version__} runs it")
