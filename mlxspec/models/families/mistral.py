"""Mistral (Jiang et al. 2023): the Llama blocks with a sliding attention window. Besides HF's
`config.json`, Mistral publishes its reference layout: `params.json` and `consolidated.*`
tensors under its own names, with q/k rows in interleaved RoPE pairs; a `moe` block in
`params.json` makes it a Mixtral (`families.mixtral`)."""

from __future__ import annotations

import re
from typing import Any

from ...errors import ConfigError
from .family import Family, GGUFKey

_UNSUPPORTED_PARAMS = {"vision_encoder": "a vision model", "lora": "LoRA adapters", "quantization": "quantized weights",
                       "yarn": "YaRN RoPE scaling", "rope_scaling": "RoPE scaling"}

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
_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)\.(weight|scales|biases)$")
# One Mixtral expert's matrix (w1 gate, w3 up, w2 down), stacked per layer on loading.
_EXPERT = re.compile(r"feed_forward\.experts\.(\d+)\.(w[123])$")


def _read_hf(config: dict[str, Any]) -> dict[str, Any]:
    """transformers' Mistral windows 4096 tokens unless told otherwise (null: none)."""
    return {"sliding_window": config.get("sliding_window", 4096)}


def _read_gguf(key: GGUFKey, names: set[str]) -> dict[str, Any]:
    return {"sliding_window": key("attention.sliding_window", None, int)}


FAMILY = Family(
    model_type="mistral", architecture="MistralForCausalLM", read_hf=_read_hf, options=frozenset({"sliding_window"}),
    write_hf=lambda args: {"sliding_window": args.sliding_window},  # null, not absent: absent means 4096
    gguf_architecture="mistral", read_gguf=_read_gguf,
)


def read_params(params: dict[str, Any]) -> dict[str, Any]:
    """`ModelArgs` fields from Mistral's `params.json`. Its checkpoints keep q/k in the
    interleaved RoPE layout, hence `rope_traditional`; a `moe` block
    ({"num_experts", "num_experts_per_tok"}) makes it a Mixtral."""
    for key, what in _UNSUPPORTED_PARAMS.items():
        if params.get(key) not in (None, False):
            raise ConfigError(f"params.json describes {what} ({key!r}), which mlxspec does not support yet")
    moe = params.get("moe")
    if moe is not None and not isinstance(moe, dict):
        raise ConfigError(f"params.json: moe must be an object, got {moe!r}")
    try:
        return dict(
            hidden_size=params["dim"],
            num_hidden_layers=params["n_layers"],
            intermediate_size=params["hidden_dim"],
            num_attention_heads=params["n_heads"],
            vocab_size=params["vocab_size"],
            num_key_value_heads=params.get("n_kv_heads"),
            head_dim=params.get("head_dim"),
            rms_norm_eps=params.get("norm_eps", 1e-5),
            rope_theta=params.get("rope_theta", 10000.0),
            rope_traditional=True,
            sliding_window=params.get("sliding_window"),
            max_position_embeddings=params.get("max_seq_len"),
            tie_word_embeddings=False,
            model_type="mistral" if moe is None else "mixtral",
            num_local_experts=None if moe is None else moe.get("num_experts"),
            num_experts_per_tok=None if moe is None else moe.get("num_experts_per_tok", 2),
        )
    except KeyError as missing:
        raise ConfigError(f"params.json lacks required key {missing}") from None


def consolidated_to_hf_name(name: str) -> str | None:
    """HF name for a Mistral `consolidated` tensor name, or None if the name is unknown."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    match = _LAYER_KEY.match(name)
    if match and match.group(2) in _PER_LAYER:
        layer, module, kind = match.groups()
        return f"model.layers.{layer}.{_PER_LAYER[module]}.{kind}"
    expert = _EXPERT.match(match.group(2)) if match else None
    if expert and match.group(3) == "weight":
        return f"model.layers.{match.group(1)}.block_sparse_moe.experts.{expert.group(1)}.{expert.group(2)}.weight"
    return None
