"""Llama (Touvron et al. 2023; Llama 3, Grattafiori et al. 2024): the plain blocks, never
windowed (transformers' Llama ignores a `sliding_window`), optional biases on the attention
projections (all four) and on the feed-forward. Llama 3.x scales RoPE (`rope_scaling`
llama3, read by `families.common`; llama.cpp stores it as a `rope_freqs` tensor instead).
llama.cpp also writes Mistral 7B as `llama`, and Mixtral as `llama` with an `expert_count`."""

from __future__ import annotations

from typing import Any

from .family import Family, GGUFKey


def _read_hf(config: dict[str, Any]) -> dict[str, Any]:
    return {"attention_bias": config.get("attention_bias", False), "mlp_bias": config.get("mlp_bias", False)}


def _read_gguf(key: GGUFKey, names: set[str]) -> dict[str, Any]:
    """Biases where the file holds them (llama.cpp loads them when present); a mixture of
    experts as a Mixtral."""
    if key("expert_count", 0, int):
        return dict(model_type="mixtral", num_local_experts=key("expert_count", KeyError, int),
                    num_experts_per_tok=key("expert_used_count", 2, int))
    return {"attention_bias": "blk.0.attn_q.bias" in names, "mlp_bias": "blk.0.ffn_up.bias" in names}


FAMILY = Family(
    model_type="llama", architecture="LlamaForCausalLM", read_hf=_read_hf,
    options=frozenset({"attention_bias", "mlp_bias"}), gguf_architecture="llama", read_gguf=_read_gguf,
)
