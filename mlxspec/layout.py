"""The checkpoint layout that loading and converting share: every tensor's name and shape,
Mistral's reference names, and the q/k row order of the two RoPE layouts.

mlxspec's modules carry the HF names (`model.layers.0.self_attn.q_proj.weight`), so HF
and mlx-lm checkpoints load as they are; Mistral's `consolidated.*` files are renamed here.
Their q/k rows stay in Mistral's interleaved RoPE layout unless permuted (see below).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, TypeVar

import mlx.core as mx
import numpy as np

from .errors import CheckpointError
from .models.config import ModelArgs

Array = TypeVar("Array", np.ndarray, mx.array)  # both have reshape/transpose with the same meaning

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")

_TOP_LEVEL = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

_PER_LAYER = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "feed_forward.gate": "block_sparse_moe.gate",  # Mixtral's router
}
# One Mixtral expert's matrix: Mistral's `feed_forward.experts.E.wN`, HF's
# `block_sparse_moe.experts.E.wN` (w1 gate, w3 up, w2 down); stored stacked per layer.
_MISTRAL_EXPERT = re.compile(r"feed_forward\.experts\.(\d+)\.(w[123])$")
_HF_EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.)experts\.(\d+)\.(w[123])\.weight$")
_EXPERT_MATRIX = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}

_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)\.(weight|scales|biases)$")


def mistral_to_hf_name(name: str) -> str | None:
    """HF name for a Mistral `consolidated` tensor name, or None if the name is unknown."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    match = _LAYER_KEY.match(name)
    if match and match.group(2) in _PER_LAYER:
        layer, module, kind = match.groups()
        return f"model.layers.{layer}.{_PER_LAYER[module]}.{kind}"
    expert = _MISTRAL_EXPERT.match(match.group(2)) if match else None
    if expert and match.group(3) == "weight":
        return f"model.layers.{match.group(1)}.block_sparse_moe.experts.{expert.group(1)}.{expert.group(2)}.weight"
    return None


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
    d, hd = args.hidden_size, args.head_dim
    q, kv = args.num_attention_heads * hd, args.num_key_value_heads * hd
    yield "model.embed_tokens.weight", (args.vocab_size, d)
    for i in range(args.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (d,)
        yield p + "self_attn.q_proj.weight", (q, d)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.o_proj.weight", (d, q)
        yield p + "post_attention_layernorm.weight", (d,)
        yield from _feed_forward_shapes(p, args)
    yield "model.norm.weight", (d,)
    if args.head_vocab_size is not None:
        yield "lm_head.out_proj.weight", (args.head_vocab_size, d)
        yield "lm_head.token_ids", (args.head_vocab_size,)
    elif not args.tie_word_embeddings:
        yield "lm_head.weight", (args.vocab_size, d)


def _feed_forward_shapes(prefix: str, args: ModelArgs) -> Iterator[tuple[str, tuple[int, ...]]]:
    """A block's dense SwiGLU, or a Mixtral's router and stacked experts (mlx-lm's names)."""
    d, f, experts = args.hidden_size, args.intermediate_size, args.num_local_experts
    if experts is None:
        yield prefix + "mlp.gate_proj.weight", (f, d)
        yield prefix + "mlp.up_proj.weight", (f, d)
        yield prefix + "mlp.down_proj.weight", (d, f)
        return
    moe = prefix + "block_sparse_moe."
    yield moe + "gate.weight", (experts, d)
    yield moe + "switch_mlp.gate_proj.weight", (experts, f, d)
    yield moe + "switch_mlp.up_proj.weight", (experts, f, d)
    yield moe + "switch_mlp.down_proj.weight", (experts, d, f)


def permute_interleaved_to_half(weight: Array, n_heads: int) -> Array:
    """Reorder q/k projection rows from interleaved RoPE pairs (x0,x1),(x2,x3).. to the
    rotate-half layout HF uses (x0..x_{d/2-1} paired with x_{d/2}..), head by head.

    Combined with the matching `rope_traditional` flag, both layouts give equal logits.
    """
    out_dim, in_dim = weight.shape
    head_dim = out_dim // n_heads
    return (
        weight.reshape(n_heads, head_dim // 2, 2, in_dim)
        .transpose(0, 2, 1, 3)
        .reshape(out_dim, in_dim)
    )


def permute_half_to_interleaved(weight: Array, n_heads: int) -> Array:
    """Inverse of `permute_interleaved_to_half`: rotate-half rows back to interleaved pairs."""
    out_dim, in_dim = weight.shape
    head_dim = out_dim // n_heads
    return (
        weight.reshape(n_heads, 2, head_dim // 2, in_dim)
        .transpose(0, 2, 1, 3)
        .reshape(out_dim, in_dim)
    )
