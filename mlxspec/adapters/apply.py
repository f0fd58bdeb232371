"""An adapter applied to a loaded model, a port `Model` or a `ForeignModel` (mlx-lm's
module): every tensor of the folder must find its place, in name and shape, before the
model is touched.

LoRA and DoRA on float weights are folded into them (mlx-lm's `fuse`): the model then
costs what its base costs, and its outputs equal mlx-lm's unfused layers' up to float
rounding. On quantized weights mlx-lm's LoRA/DoRA layers stay in place around the
quantized layers (folding would quantize the sum anew). A full fine-tune's tensors replace
the parameters they name.

A checkpoint in Mistral's layout keeps its query and key rows in RoPE's interleaved order
(rotated "traditionally"), while mlx-lm trains on the HF twin, whose rows are in rotate-half
order: there the adapter's output rows of q_proj and k_proj are put in the interleaved order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..errors import CheckpointError, ConfigError
from ..layout import permute_half_to_interleaved
from ..models.foreign import ForeignModel
from ..standard_streams import reopen_closed_descriptors
from .folder import Adapter, check_full_tensors, read_adapter
from .layers import base_of, chosen_modules, fused_weight, lora_layer, quantized


def _tensors(adapter: Adapter) -> dict[str, mx.array]:
    """The adapter's tensors (lazily; the header was checked by `read_adapter`)."""
    reopen_closed_descriptors()
    try:
        return mx.load(str(adapter.weights_file))
    except Exception as exc:  # MLX raises bare RuntimeError/ValueError for bad files
        raise CheckpointError(f"{adapter.weights_file}: unreadable safetensors file ({exc})") from None


def _interleaved(tensors: dict[str, mx.array], args: Any) -> dict[str, mx.array]:
    """The tensors with the output rows of q_proj and k_proj (lora_b's columns, DoRA's m, a
    full fine-tune's weight and bias) from rotate-half into interleaved order, head by head."""
    out = {}
    for name, tensor in tensors.items():
        heads = args.num_attention_heads if ".self_attn.q_proj." in name else \
            args.num_key_value_heads if ".self_attn.k_proj." in name else None
        leaf = name.rsplit(".", 1)[-1]
        if heads is not None and leaf in ("lora_b", "weight"):
            tensor = permute_half_to_interleaved(tensor.T, heads).T if leaf == "lora_b" else \
                permute_half_to_interleaved(tensor, heads)
        elif heads is not None and leaf in ("m", "bias"):
            tensor = permute_half_to_interleaved(tensor[:, None], heads)[:, 0]
        out[name] = tensor
    return out


def _quantized_hint(root: nn.Module) -> str:
    return "; the model is quantized: load it with --dequantize" if any(
        quantized(m) for _, m in root.named_modules()) else ""


def _apply_full(root: nn.Module, adapter: Adapter, tensors: dict[str, mx.array]) -> None:
    """A full fine-tune: its tensors replace the parameters of the same names."""
    params = dict(tree_flatten(root.parameters()))
    if adapter.num_layers is not None and adapter.num_layers > len(root.layers):
        raise ConfigError(f"{adapter.config_file}: num_layers {adapter.num_layers} but this model has "
                          f"{len(root.layers)} blocks")
    check_full_tensors(adapter, {k: tuple(v.shape) for k, v in params.items()}, "this model", _quantized_hint(root))
    root.load_weights([(k, v.astype(params[k].dtype)) for k, v in tensors.items()], strict=False)


def adapter_layers(root: nn.Module, adapter: Adapter) -> dict[str, nn.Module]:
    """path -> mlx-lm's adapter layer for every module the adapter adapts, checked against
    the folder's tensors: each of them in place, of the layer's shape."""
    chosen = chosen_modules(root, adapter)
    given = adapter.adapted_modules()
    for path in sorted(given):
        if path not in chosen:
            what = "is not adapted by this adapter's keys and num_layers" if path in dict(root.named_modules()) \
                else "names no module of this model"
            raise CheckpointError(f"{adapter.weights_file}: tensor {path + '.lora_a'!r}: {path!r} {what}")
    for path in sorted(chosen):
        if path not in given:
            raise CheckpointError(f"{adapter.weights_file}: no tensors for {path!r}, which {adapter.config_file.name} adapts")
    layers = {path: lora_layer(module, adapter, path) for path, module in chosen.items()}
    for path, layer in layers.items():
        expected = {k: tuple(v.shape) for k, v in layer.parameters().items() if isinstance(v, mx.array)}
        for leaf, shape in given[path].items():
            if leaf not in expected:
                raise CheckpointError(f"{adapter.weights_file}: tensor '{path}.{leaf}' has no place in "
                                      f"{type(layer).__name__}")
            if shape != expected[leaf]:
                raise CheckpointError(f"{adapter.weights_file}: tensor '{path}.{leaf}' has shape {shape}, the "
                                      f"model's layer needs {expected[leaf]}")
    return layers


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at `path` (dotted, list indices as numbers) inside `root`."""
    *head, last = path.split(".")
    parent: Any = root
    for part in head:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        parent[int(last)] = module
    else:
        setattr(parent, last, module)


def _apply_lora(root: nn.Module, adapter: Adapter, tensors: dict[str, mx.array]) -> None:
    """LoRA/DoRA: folded into float weights, mlx-lm's layers around quantized ones."""
    layers, given = adapter_layers(root, adapter), adapter.adapted_modules()
    for path, layer in layers.items():
        layer.update({leaf: tensors[f"{path}.{leaf}"] for leaf in given[path]})
        base = base_of(layer)
        if base is None or quantized(base) or not hasattr(layer, "fuse"):
            _replace(root, path, layer)
        else:
            base.weight = fused_weight(layer).astype(base.weight.dtype)


def apply_adapter(model: Any, adapter: str | Path | Adapter, interleaved_qk: bool = False) -> Any:
    """Apply an mlx-lm adapter folder (or a checked `Adapter`) to `model`, just loaded (a port
    `Model` or a `ForeignModel`), in place; returns it. `interleaved_qk`: the model was loaded
    from Mistral's layout (see the module docstring). The model's `adapter_id` names the
    adapter, so that what is measured for it (calibration) is not taken for its base's."""
    adapter = read_adapter(adapter)
    root = model.lm if isinstance(model, ForeignModel) else model
    tensors = _tensors(adapter)
    if interleaved_qk:
        tensors = _interleaved(tensors, root.args)
    if adapter.fine_tune_type == "full":
        _apply_full(root, adapter, tensors)
    else:
        _apply_lora(root, adapter, tensors)
    root.eval()
    try:
        mx.eval(root.parameters())
    except (RuntimeError, ValueError) as exc:  # a file cut short shows only when read
        raise CheckpointError(f"{adapter.weights_file}: unreadable tensors ({str(exc).splitlines()[0][:200]})") from None
    model.adapter_id = adapter.digest
    return model
