"""Folding an adapter into a checkpoint as it is converted (`mlxspec convert --adapter`), as
`mlx_lm.fuse` does: each adapted matrix becomes its base with the adaptation folded in
(mlx-lm's `fuse`), one tensor at a time, before it is cast or quantized like any other.

The adapter is checked first against a skeleton of the model the source describes (its
parameters never computed): the same modules, names and shapes as when it is applied at
load (`mlxspec.adapters`). A tensor the source stores quantized (GGUF) and the adapter
changes is expanded, folded and quantized again to its own bits (`FusionWarning` says
how many); a stacked experts tensor is folded expert by expert."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlxspec.adapters import Adapter
from mlxspec.adapters.folder import check_full_tensors
from mlxspec.adapters.apply import adapter_layers
from mlxspec.adapters.layers import base_of, fused_weight
from mlxspec.errors import CheckpointError
from mlxspec.models import Model

from .sources import Source, TensorRef


class FusionWarning(UserWarning):
    """Tensors stored quantized were expanded, folded with the adapter and quantized again."""


def _load_tensors(adapter: Adapter) -> dict[str, mx.array]:
    try:
        return mx.load(str(adapter.weights_file))
    except Exception as exc:  # MLX raises bare RuntimeError/ValueError for bad files
        raise CheckpointError(f"{adapter.weights_file}: unreadable safetensors file ({exc})") from None


def _skeleton(source: Source) -> nn.Module:
    """The port's model for the source's configuration; nothing of it is ever computed."""
    return Model(source.args)


def _folded(layer: nn.Module, load: Callable[[], mx.array]) -> Callable[[], mx.array]:
    """A loader of `load()`'s matrix with `layer`'s adaptation folded in."""

    def fused() -> mx.array:
        weight = load()
        base = base_of(layer)
        base.weight = weight.astype(mx.float32)
        fused = fused_weight(layer).astype(weight.dtype)
        base.weight = mx.zeros(weight.shape)  # lazy: the skeleton holds no tensor
        return fused

    return fused


def _expert_layers(layer: nn.Module) -> list[nn.Module]:
    """One dense LoRA layer per expert of a `LoRASwitchLinear` (the same fold, expert by expert)."""
    from mlx_lm.tuner.lora import LoRALinear

    layers = []
    for a, b in zip(layer.lora_a, layer.lora_b):  # [r, in] and [out, r] per expert
        one = LoRALinear(a.shape[1], b.shape[0], r=a.shape[0], scale=layer.scale)
        one.lora_a, one.lora_b = a.T, b.T
        layers.append(one)
    return layers


def _requantizer(ref: TensorRef, load: Callable[[], mx.array]):
    """A packed loader for a folded tensor kept quantized at its own (bits, group size), or
    None where MLX has no such groups (the converter then re-quantizes it as it does Q6_K)."""
    bits, group = ref.quant
    if group not in (32, 64, 128):
        return None
    return lambda: tuple(mx.quantize(load(), group_size=group, bits=bits))


def _fold_full(source: Source, adapter: Adapter, tensors: dict[str, mx.array]) -> Source:
    """A full fine-tune: its tensors replace the source's of the same names and shapes."""
    check_full_tensors(adapter, {ref.name: tuple(ref.shape) for ref in source.tensors}, str(source.root))
    out = []
    for ref in source.tensors:
        if ref.name in tensors:
            value = tensors[ref.name]
            ref = replace(ref, load=lambda v=value: v, quant=None, load_packed=None, parts=None)
        out.append(ref)
    return replace(source, tensors=out)


def fold_adapter(source: Source, adapter: Adapter) -> Source:
    """`source` with `adapter` folded into the tensors it adapts (checked before anything is
    written: a module or shape the source lacks is one `CheckpointError` or `ConfigError`)."""
    tensors = _load_tensors(adapter)
    if adapter.fine_tune_type == "full":
        return _fold_full(source, adapter, tensors)
    layers = adapter_layers(_skeleton(source), adapter)
    for path, layer in layers.items():
        layer.update({leaf: tensors[f"{path}.{leaf}"] for leaf in adapter.adapted_modules()[path]})
    out, requantized = [], 0
    for ref in source.tensors:
        layer = layers.get(ref.name[: -len(".weight")]) if ref.name.endswith(".weight") else None
        if layer is None:
            out.append(ref)
            continue
        if ref.parts is not None:
            parts = [_folded(one, part) for one, part in zip(_expert_layers(layer), ref.parts)]
            ref = replace(ref, parts=parts, load=lambda parts=parts: mx.stack([p() for p in parts]))
        else:
            load = _folded(layer, ref.load)
            packed = _requantizer(ref, load) if ref.quant is not None else None
            requantized += ref.quant is not None
            ref = replace(ref, load=load, load_packed=packed)
        out.append(ref)
    if requantized:
        warnings.warn(f"{source.root}: {requantized} quantized tensors expanded, folded with the adapter "
                      "and quantized again at their own bits", FusionWarning, stacklevel=3)
    return replace(source, tensors=out)


def fold_into_mlx_lm(lm: nn.Module, config: dict, adapter: Adapter) -> tuple[nn.Module, dict, dict | None]:
    """mlx-lm's module `lm` (of a checkpoint mlx-lm converts) with `adapter` folded in:
    (module, its configuration, the quantization it had, to quantize it again, or None)."""
    from mlx_lm.utils import dequantize_model

    from mlxspec.adapters import apply_adapter

    quant = config.get("quantization")
    if quant:
        lm = dequantize_model(lm)
        config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    apply_adapter(lm, adapter)
    return lm, config, quant if isinstance(quant, dict) else None
