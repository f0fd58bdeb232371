"""Which modules of a model an adapter adapts, chosen as mlx-lm's `linear_to_lora_layers`
chooses them, and mlx-lm's LoRA/DoRA layers (`mlx_lm.tuner`) built around them, mlxspec's
own dense and expert layers included; and folding such a layer back into its base weight.

The choice: with `keys`, the modules of those names inside each of the last `num_layers`
blocks (-1 or 0: every block), and any module whose full name is a key; without, every
dense, embedding and expert layer inside those blocks."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..errors import ConfigError
from ..models.moe import QuantizedSwitchLinear, SwitchLinear
from .folder import Adapter

DENSE = (nn.Linear, nn.QuantizedLinear)
EMBEDDING = (nn.Embedding, nn.QuantizedEmbedding)


def _switch_types() -> tuple[type, ...]:
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear as LmQuantized, SwitchLinear as LmSwitch

    return SwitchLinear, QuantizedSwitchLinear, LmSwitch, LmQuantized


def adaptable(module: Any) -> bool:
    """Whether mlx-lm's LoRA wraps this kind of layer."""
    return hasattr(module, "to_lora") or isinstance(module, DENSE + EMBEDDING + _switch_types())


def _names(root: nn.Module) -> dict[int, str]:
    """id(module) -> its path from `root`."""
    return {id(m): path for path, m in root.named_modules()}


def chosen_modules(root: nn.Module, adapter: Adapter) -> dict[str, nn.Module]:
    """path from `root` -> module, for every module `adapter` adapts in `root` (whose
    `layers` are its blocks). A key naming no module, or more blocks than `root` has, is one
    `ConfigError` naming adapter_config.json."""
    layers, where = list(root.layers), adapter.config_file
    n = adapter.num_layers
    if n is not None and n > len(layers):
        raise ConfigError(f"{where}: num_layers {n} but this model has {len(layers)} blocks")
    relative = [dict(layer.named_modules()) for layer in layers]
    top = dict(root.named_modules())
    keys = adapter.keys
    if keys is None:
        keys = tuple(sorted({k for modules in relative for k, m in modules.items() if k and adaptable(m)}))
    for key in keys:
        if not any(key in modules for modules in relative) and key not in top:
            raise ConfigError(f"{where}: lora_parameters.keys names {key!r}, which is no module of this model's blocks")
    names = _names(root)
    chosen: dict[str, nn.Module] = {}
    for layer, modules in list(zip(layers, relative))[-max(n or 0, 0):]:
        prefix = names[id(layer)]
        chosen.update({f"{prefix}.{k}": m for k, m in modules.items() if k in keys})
    chosen.update({k: m for k, m in top.items() if k in keys})
    return chosen


def _switch_dims(module: Any) -> tuple[int, int, int]:
    """(input dims, output dims, experts) of a stacked-experts layer, quantized or not."""
    experts, out, columns = module.weight.shape
    return columns * 32 // module.bits if "scales" in module else columns, out, experts


def lora_layer(module: Any, adapter: Adapter, path: str) -> nn.Module:
    """mlx-lm's LoRA (or DoRA) layer around `module`, its adapter tensors not yet loaded."""
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    dora, settings = adapter.fine_tune_type == "dora", dict(r=adapter.rank, scale=adapter.scale, dropout=0.0)
    if not dora and hasattr(module, "to_lora"):
        return module.to_lora(**settings)
    if isinstance(module, DENSE):
        return (DoRALinear if dora else LoRALinear).from_base(module, **settings)
    if isinstance(module, EMBEDDING):
        return (DoRAEmbedding if dora else LoRAEmbedding).from_base(module, **settings)
    if isinstance(module, _switch_types()) and not dora:
        layer = LoRASwitchLinear(*_switch_dims(module), **settings)
        layer.linear = module
        return layer
    raise ConfigError(f"{adapter.config_file}: {adapter.fine_tune_type} cannot adapt {path!r}, "
                      f"a {type(module).__name__} (mlx-lm adapts dense, embedding and, with lora, expert layers)")


def base_of(layer: nn.Module) -> nn.Module | None:
    """The layer an adapter layer wraps (None for a model's own `to_lora` layer of another shape)."""
    return layer.get("linear", layer.get("embedding"))


def quantized(module: nn.Module) -> bool:
    """Whether a layer holds quantized weights (scales beside them)."""
    return "scales" in module


def fused_weight(layer: nn.Module) -> mx.array:
    """The base weight with the adaptation folded in (mlx-lm's `fuse`), for a float base."""
    return layer.fuse(dequantize=True).weight


__all__ = ["adaptable", "base_of", "chosen_modules", "fused_weight", "lora_layer", "quantized"]
