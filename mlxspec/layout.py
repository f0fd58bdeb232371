"""The checkpoint layout that loading and converting share: every tensor's name and shape,
whether the weights hold the optional parts the config names, and the q/k row order of the
two RoPE layouts.

mlxspec's modules carry the HF names (`model.layers.0.self_attn.q_proj.weight`), so HF
and mlx-lm checkpoints load as they are; Mistral's `consolidated.*` names are renamed by
`families.mistral`. Their q/k rows stay in Mistral's interleaved RoPE layout unless permuted
(see below).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, TypeVar

import mlx.core as mx
import numpy as np

from .errors import CheckpointError, ConfigError
from .models.config import ModelArgs

Array = TypeVar("Array", np.ndarray, mx.array)  # both have reshape/transpose with the same meaning

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_FIRST_LAYER = re.compile(r"(?:^|\.)layers\.0\.")

# One Mixtral expert's matrix, HF's `block_sparse_moe.experts.E.wN` (w1 gate, w3 up, w2
# down; Mistral's names are renamed to these first); stored stacked per layer.
_HF_EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.)experts\.(\d+)\.(w[123])\.weight$")
_EXPERT_MATRIX = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
# The tensors of each optional part of the blocks (a `ModelArgs` flag), by name ending.
_OPTIONAL_TENSORS = {"qk_norm": ("self_attn.q_norm.weight", "self_attn.k_norm.weight"),
                     "qkv_bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
                     "o_bias": ("self_attn.o_proj.bias",),
                     "mlp_bias": ("mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias")}


def expert_slot(name: str) -> tuple[str, int] | None:
    """For one expert's matrix under its HF name, the stacked tensor it belongs to and its
    index there (`...experts.3.w1.weight` -> (`...switch_mlp.gate_proj.weight`, 3)); else None."""
    match = _HF_EXPERT.match(name)
    if match is None:
        return None
    prefix, index, matrix = match.groups()
    return f"{prefix}switch_mlp.{_EXPERT_MATRIX[matrix]}.weight", int(index)


def group_experts(names: Iterable[str], where: object) -> dict[str, list[str]]:
    """Stacked tensor name -> its experts' names in expert order, for every per-expert
    matrix among `names`; each stack must hold experts 0..E-1 exactly once."""
    stacks: dict[str, dict[int, str]] = {}
    for name in names:
        slot = expert_slot(name)
        if slot is not None:
            if slot[1] in stacks.setdefault(slot[0], {}):
                raise CheckpointError(f"{where}: expert tensor {name!r} appears twice")
            stacks[slot[0]][slot[1]] = name
    for stacked, experts in stacks.items():
        if sorted(experts) != list(range(len(experts))):
            missing = min(set(range(max(experts) + 1)) - set(experts))
            raise CheckpointError(f"{where}: {stacked!r} lacks expert {missing} (found {len(experts)})")
    return {stacked: [experts[i] for i in range(len(experts))] for stacked, experts in stacks.items()}


def check_layer_count(names: Iterable[str], layers: int, where: object) -> None:
    """Before a model with `layers` blocks is built (or its expected tensors listed): the
    checkpoint must hold exactly blocks 0..layers-1, so that a config claiming 10^8 layers
    over a small file fails at once instead of building them."""
    found = {int(m[1]) for name in names if (m := _LAYER_INDEX.search(name))}
    if len(found) != layers or (found and (min(found) != 0 or max(found) != layers - 1)):  # found == 0..layers-1
        raise CheckpointError(f"{where}: the config says {layers} layers, the weights hold "
                              f"{len(found)} (indices {min(found, default=None)}..{max(found, default=None)})")


def hf_tensor_shapes(args: ModelArgs) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(HF name, shape) of every tensor of a model with `args`, in checkpoint order."""
    d = args.hidden_size
    yield "model.embed_tokens.weight", (args.vocab_size, d)
    for i in range(args.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (d,)
        yield from _attention_shapes(p + "self_attn.", args)
        yield p + "post_attention_layernorm.weight", (d,)
        yield from _feed_forward_shapes(p, args)
    yield "model.norm.weight", (d,)
    if args.head_vocab_size is not None:
        yield "lm_head.out_proj.weight", (args.head_vocab_size, d)
        yield "lm_head.token_ids", (args.head_vocab_size,)
    elif not args.tie_word_embeddings:
        yield "lm_head.weight", (args.vocab_size, d)


def _attention_shapes(prefix: str, args: ModelArgs) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The projections, their biases and the per-head q/k norms the config names."""
    d, hd = args.hidden_size, args.head_dim
    q, kv = args.num_attention_heads * hd, args.num_key_value_heads * hd
    for name, rows, cols in (("q_proj", q, d), ("k_proj", kv, d), ("v_proj", kv, d), ("o_proj", d, q)):
        yield f"{prefix}{name}.weight", (rows, cols)
        if args.attention_bias or (args.qkv_bias and name != "o_proj"):
            yield f"{prefix}{name}.bias", (rows,)
    if args.qk_norm:
        yield prefix + "q_norm.weight", (hd,)
        yield prefix + "k_norm.weight", (hd,)


def _feed_forward_shapes(prefix: str, args: ModelArgs) -> Iterator[tuple[str, tuple[int, ...]]]:
    """A block's dense SwiGLU, or a Mixtral's router and stacked experts (mlx-lm's names)."""
    d, f, experts = args.hidden_size, args.intermediate_size, args.num_local_experts
    if experts is None:
        for name, shape in (("gate_proj", (f, d)), ("up_proj", (f, d)), ("down_proj", (d, f))):
            yield f"{prefix}mlp.{name}.weight", shape
            if args.mlp_bias:
                yield f"{prefix}mlp.{name}.bias", shape[:1]
        return
    moe = prefix + "block_sparse_moe."
    yield moe + "gate.weight", (experts, d)
    yield moe + "switch_mlp.gate_proj.weight", (experts, f, d)
    yield moe + "switch_mlp.up_proj.weight", (experts, f, d)
    yield moe + "switch_mlp.down_proj.weight", (experts, d, f)


def check_optional_parts(names: Iterable[str], args: ModelArgs, where: object) -> None:
    """The weights hold the optional parts the config names (biases, per-head q/k norms) and
    no others, judged on block 0: a checkpoint of another family under this config's name
    is a `ConfigError` naming the part, before any shape is compared."""
    first = sorted(n for n in names if _FIRST_LAYER.search(n))
    named = {"qk_norm": args.qk_norm, "qkv_bias": args.attention_bias or args.qkv_bias,
             "o_bias": args.attention_bias, "mlp_bias": args.mlp_bias}
    for part, endings in _OPTIONAL_TENSORS.items():
        held = next((n for ending in endings for n in first if n.endswith(ending)), None)
        if named[part] and held is None:
            raise ConfigError(f"{where}: a {args.model_type} model as configured has {part} "
                              f"({', '.join(e.split('.')[-2] for e in endings)}), "
                              "the weights hold none")
        if not named[part] and held is not None:
            raise ConfigError(f"{where}: the weights hold {held!r} ({part}), which a {args.model_type} model "
                              "as configured does not have")


def permute_interleaved_to_half(weight: Array, n_heads: int) -> Array:
    """Reorder q/k projection rows (or bias entries) from interleaved RoPE pairs
    (x0,x1),(x2,x3).. to the rotate-half layout HF uses (x0..x_{d/2-1} paired with
    x_{d/2}..), head by head.

    Combined with the matching `rope_traditional` flag, both layouts give equal logits.
    """
    head_dim = weight.shape[0] // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, -1).transpose(0, 2, 1, 3).reshape(weight.shape)


def permute_half_to_interleaved(weight: Array, n_heads: int) -> Array:
    """Inverse of `permute_interleaved_to_half`: rotate-half rows back to interleaved pairs."""
    head_dim = weight.shape[0] // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, -1).transpose(0, 2, 1, 3).reshape(weight.shape)
