"""Qwen3 (Yang et al. 2025): Qwen2's blocks without the q/k/v biases, with an RMSNorm over
each head of the queries and keys before RoPE (`q_norm`, `k_norm`), and head_dim 128 unless
the config says otherwise (not hidden_size / heads). `attention_bias` puts biases on all four
attention projections. Windows as in Qwen2."""

from __future__ import annotations

from typing import Any

from .family import Family, GGUFKey
from .qwen2 import window, write_window


def _read_hf(config: dict[str, Any]) -> dict[str, Any]:
    return {"qk_norm": True, "head_dim": config.get("head_dim", 128),
            "attention_bias": config.get("attention_bias", False), "sliding_window": window(config)}


def _read_gguf(key: GGUFKey, names: set[str]) -> dict[str, Any]:
    return {"qk_norm": True, "attention_bias": "blk.0.attn_q.bias" in names}


FAMILY = Family(
    model_type="qwen3", architecture="Qwen3ForCausalLM", read_hf=_read_hf,
    options=frozenset({"attention_bias", "qk_norm", "sliding_window"}), write_hf=write_window,
    gguf_architecture="qwen3", gguf_interleaved=False, read_gguf=_read_gguf,
)
