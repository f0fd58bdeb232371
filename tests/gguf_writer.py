"""llama.cpp's conversion of an HF checkpoint, written with llama.cpp's own `gguf` package:
its tensor names, q/k rows in interleaved RoPE pairs for LLaMA-style architectures (Qwen's
stay in HF's order), Llama 3's RoPE scaling as a `rope_freqs` tensor of per-dimension
factors (as `convert_hf_to_gguf.py` computes them), matrices in chosen block types."""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxspec.layout import permute_half_to_interleaved
from mlxspec.load import stack_experts
from mlxspec.models.config import load_model_args

_LLAMA_CPP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
          "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
          "block_sparse_moe.gate": "ffn_gate_inp", "block_sparse_moe.switch_mlp.gate_proj": "ffn_gate_exps",
          "block_sparse_moe.switch_mlp.up_proj": "ffn_up_exps", "block_sparse_moe.switch_mlp.down_proj": "ffn_down_exps"}
_ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3"}  # llama.cpp writes the others as llama


def llama_cpp_name(name: str) -> str:
    if name in _LLAMA_CPP_NAMES:
        return _LLAMA_CPP_NAMES[name]
    _, _, layer, rest = name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER[module]}.{kind}"


def add_sp_tokenizer(writer, sp_model_file: Path) -> None:
    """The Mistral SentencePiece vocabulary in GGUF's `llama` tokenizer form."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model_file))
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i) for i in range(n)])
    writer.add_token_scores([sp.get_score(i) for i in range(n)])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)


def llama3_rope_factors(scaling: dict, theta: float, head_dim: int) -> np.ndarray:
    """`rope_freqs` as llama.cpp computes it from a llama3 `rope_scaling`."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _add_metadata(writer, args, window: int | None) -> None:
    if args.num_local_experts:
        writer.add_expert_count(args.num_local_experts)
        writer.add_expert_used_count(args.num_experts_per_tok)
    writer.add_block_count(args.num_hidden_layers)
    writer.add_context_length(args.max_position_embeddings or 2048)
    writer.add_embedding_length(args.hidden_size)
    writer.add_feed_forward_length(args.intermediate_size)
    writer.add_head_count(args.num_attention_heads)
    writer.add_head_count_kv(args.num_key_value_heads)
    writer.add_key_length(args.head_dim)
    writer.add_value_length(args.head_dim)
    writer.add_layer_norm_rms_eps(args.rms_norm_eps)
    writer.add_rope_freq_base(args.rope_theta)
    writer.add_rope_dimension_count(args.head_dim)
    scaling = args.rope_scaling or {}
    if scaling.get("rope_type") in ("linear", "yarn"):
        writer.add_string(f"{writer.arch}.rope.scaling.type", scaling["rope_type"])
        writer.add_float32(f"{writer.arch}.rope.scaling.factor", scaling["factor"])
    if scaling.get("rope_type") == "yarn":
        writer.add_uint32(f"{writer.arch}.rope.scaling.original_context_length",
                          scaling["original_max_position_embeddings"])
    if window is not None:
        writer.add_uint32(f"{writer.arch}.attention.sliding_window", window)


def write_gguf(hf_dir: Path, out: Path, sp_model_file: Path, types: dict[str, int] | None = None,
               arch: str | None = None, window: int | None = None) -> Path:
    """llama.cpp's conversion of `hf_dir` (see above), matrices in the block type
    `types[suffix]` (default F32); `window` adds the `{arch}.attention.sliding_window` key."""
    import gguf

    args = load_model_args(hf_dir)
    weights = {}
    for f in sorted(hf_dir.glob("model*.safetensors")):
        weights.update(mx.load(str(f)))
    weights = {k: np.array(v) for k, v in stack_experts(weights, hf_dir).items()}  # llama.cpp stacks them too
    arch = arch or _ARCHITECTURES.get(args.model_type, "llama")
    writer = gguf.GGUFWriter(str(out), arch)
    _add_metadata(writer, args, window)
    add_sp_tokenizer(writer, sp_model_file)
    if (args.rope_scaling or {}).get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(args.rope_scaling, args.rope_theta, args.head_dim))
    for name, w in weights.items():
        if name.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias")) and arch not in _ARCHITECTURES:
            w = permute_half_to_interleaved(w, args.num_attention_heads if "q_proj" in name else args.num_key_value_heads)
        _add_tensor(writer, gguf, llama_cpp_name(name), w, (types or {}).get(name.split(".")[-2]) if w.ndim >= 2 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _add_tensor(writer, gguf, name: str, w: np.ndarray, qtype) -> None:
    Q = gguf.GGMLQuantizationType
    if qtype in (None, Q.F32):
        writer.add_tensor(name, w.astype(np.float32))
    elif qtype == Q.F16:
        writer.add_tensor(name, w.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(w.astype(np.float32), qtype), raw_dtype=qtype)
