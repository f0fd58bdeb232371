"""The memory one model takes in a run, from its shape and stored tensors alone: its weights as
stored and as loaded (expanded to float32 with `dequantize`), its KV cache (2 x layers x KV heads
x head size x bytes an element, per token and row; a sliding window caps the tokens at window +
the most rolled back; a growing cache allocates 256 positions at a time), and the largest
transient of a prefill pass over one chunk. Invariant: the same numbers for the same shape,
whatever reads it (plan, fit check)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .request import FitRequest
from .shape import FLOAT_BYTES, ModelShape, Tensor

CACHE_STEP = 256  # models.cache.KVCache grows by this many positions
DEFAULT_CHUNK = 2048  # engine.decode.default_chunk_size without a window
# Transients of one prefill pass, in float elements, calibrated against mx.get_peak_memory on
# the CPU backend (benchmarks/plan_accuracy.py; README "Will it fit? mlxspec plan"):
SCORE_COPIES = 1.25  # attention scores [heads, chunk, keys] (fitted: 1.1 to 1.5 on the models measured)
MLP_COPIES = 3  # [chunk, intermediate]: gate, up and their product
HIDDEN_COPIES = 6  # [chunk, hidden]: residual, norm, attention output, q/k/v


@dataclass(frozen=True)
class Footprint:
    """Bytes of one model in a run (see the module docstring); `read_per_token`: what one
    decoding step reads (weights but the embedding table, the active experts, the KV cache)."""

    weights_stored: int
    weights_loaded: int
    kv_per_token: int
    kv_cache: int
    activations: int
    read_per_token: int
    float_bytes: int

    @property
    def total(self) -> int:
        return self.weights_loaded + self.kv_cache + self.activations


def footprint(shape: ModelShape, request: FitRequest, tokens: int, fused_attention: bool = False) -> Footprint:
    """The footprint of `shape` holding `tokens` tokens in each of `request.batch` rows;
    `fused_attention`: attention never holds its scores (MLX's Metal kernel), else it does (CPU)."""
    fb = 4 if request.dequantize else float_bytes(shape)
    per_token = kv_per_token(shape, request, fb)
    cache = kv_cache_bytes(shape, request, tokens, fb)
    loaded = loaded_bytes(shape, request.dequantize)
    read = streamed_bytes(shape, request.dequantize) + cache // request.batch
    activations = activation_bytes(shape, request, tokens, fb, fused_attention)
    return Footprint(stored_bytes(shape), loaded, per_token, cache, activations, read, fb)


def float_bytes(shape: ModelShape) -> int:
    """Bytes of the activations' float type: the norms' (a quantized model computes in its
    scales' type), 2 when nothing says or for a GGUF file (its norms are float32 whatever the
    model computes in; llama.cpp keeps its KV cache in float16)."""
    if shape.stored_format == "gguf":
        return 2
    norms = [t for t in shape.tensors if t.name.endswith("norm.weight") and t.dtype in FLOAT_BYTES]
    scales = [t for t in shape.tensors if t.name.endswith(".scales") and t.dtype in FLOAT_BYTES]
    for found in (scales, norms):
        if found:
            return FLOAT_BYTES[found[0].dtype]
    return 2


def kv_element_bytes(request: FitRequest, fb: int) -> float:
    """Bytes a cached element takes: the float type, or b bits plus a scale and a bias per group."""
    if request.kv_bits is None:
        return fb
    return request.kv_bits / 8 + 2 * fb / request.kv_group_size


def kv_per_token(shape: ModelShape, request: FitRequest, fb: int) -> int:
    """KV bytes one token adds to one row, every layer counted (windows aside)."""
    return math.ceil(2 * shape.layers * shape.kv_heads * shape.head_dim * kv_element_bytes(request, fb))


def kv_cache_bytes(shape: ModelShape, request: FitRequest, tokens: int, fb: int) -> int:
    """KV bytes of all rows once each holds `tokens` tokens."""
    allocated = -(-tokens // CACHE_STEP) * CACHE_STEP
    windowed = allocated if shape.window is None else min(allocated, shape.window + request.draft_tokens)
    positions = shape.windowed_layers * windowed + (shape.layers - shape.windowed_layers) * allocated
    per_position = 2 * shape.kv_heads * shape.head_dim * kv_element_bytes(request, fb)
    return math.ceil(positions * per_position * request.batch)


def prefill_chunk(shape: ModelShape, request: FitRequest) -> int:
    """Prompt tokens a prefill pass feeds (what `generate --prefill-chunk` defaults to)."""
    return request.prefill_chunk or shape.window or DEFAULT_CHUNK


def activation_bytes(shape: ModelShape, request: FitRequest, tokens: int, fb: int, fused_attention: bool = False) -> int:
    """The largest transient of one prefill pass over a chunk (at the end of the context, where
    it attends to the most keys); a feature draft's are those of its own blocks."""
    chunk = min(prefill_chunk(shape, request), tokens)
    keys = tokens if shape.window is None else min(tokens, shape.window + request.draft_tokens + chunk)
    scores = 0 if fused_attention else SCORE_COPIES * shape.heads * chunk * keys * fb
    mlp = MLP_COPIES * chunk * shape.intermediate * (shape.experts_per_token or 1) * fb
    return int(scores + mlp + HIDDEN_COPIES * chunk * shape.hidden * fb + 4 * shape.vocab * (request.draft_tokens + 1))


def stored_bytes(shape: ModelShape) -> int:
    return sum(t.nbytes for t in shape.tensors)


def _kept(shape: ModelShape) -> list[Tensor]:
    """The tensors loading keeps (a tied head's copy and RoPE buffers are dropped)."""
    dropped = ("rotary_emb.inv_freq",) + (("lm_head.weight", "lm_head.scales", "lm_head.biases") if shape.tied else ())
    return [t for t in shape.tensors if not t.name.endswith(dropped)]


def tensor_loaded_bytes(shape: ModelShape, dequantize: bool) -> dict[str, int]:
    """Bytes of each kept tensor once loaded: as stored, or with `dequantize` every float and
    quantized matrix in float32 (a (weight, scales, biases) triple as one matrix)."""
    kept = {t.name: t for t in _kept(shape)}
    if not dequantize:
        return {name: t.nbytes for name, t in kept.items()}
    out = {}
    for name, t in kept.items():
        base = name.rsplit(".", 1)[0]
        if name.endswith((".scales", ".biases")) and f"{base}.weight" in kept:
            continue
        scales = kept.get(f"{base}.scales") if name.endswith(".weight") else None
        if scales is not None:
            out[name] = 4 * math.prod(t.shape[:-1]) * scales.shape[-1] * _group_size(shape, base)
        elif t.dtype in FLOAT_BYTES or shape.stored_format == "gguf":
            out[name] = 4 * t.elements
        else:
            out[name] = t.nbytes
    return out


def _group_size(shape: ModelShape, base: str) -> int:
    quant = shape.quantization or {}
    layer = quant.get(base)
    return int((layer if isinstance(layer, dict) else quant).get("group_size", quant.get("group_size", 64)))


def loaded_bytes(shape: ModelShape, dequantize: bool) -> int:
    return sum(tensor_loaded_bytes(shape, dequantize).values())


def streamed_bytes(shape: ModelShape, dequantize: bool) -> int:
    """Weight bytes one decoding step reads: all but the embedding table (one row of it is
    read; a tied table is read whole as the head), experts in the share a token routes to."""
    share = (shape.experts_per_token or 1) / shape.experts if shape.experts else 1.0
    total = 0.0
    for name, size in tensor_loaded_bytes(shape, dequantize).items():
        if ("embed_tokens" in name or name.startswith("token_embd")) and not shape.tied:
            continue
        total += size * (share if ("switch_mlp" in name or "_exps" in name) else 1.0)
    return int(total)
