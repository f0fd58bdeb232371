"""Weight names and layouts: Mistral's reference checkpoints vs HF / mlx-lm.

mlxspec's modules carry the HF names (`model.layers.0.self_attn.q_proj.weight`), so HF
and mlx-lm checkpoints load as they are; Mistral's `consolidated.*` files are renamed here.
Their q/k rows stay in Mistral's interleaved RoPE layout unless permuted (see below).
"""

from __future__ import annotations

import re

from typing import TypeVar

import mlx.core as mx
import numpy as np

Array = TypeVar("Array", np.ndarray, mx.array)  # both have reshape/transpose with the same meaning

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
}

_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)\.(weight|scales|biases)$")


def mistral_to_hf_name(name: str) -> str | None:
    """HF name for a Mistral `consolidated` tensor name, or None if the name is unknown."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    match = _LAYER_KEY.match(name)
    if match and match.group(2) in _PER_LAYER:
        layer, module, kind = match.groups()
        return f"model.layers.{layer}.{_PER_LAYER[module]}.{kind}"
    return None


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
