"""GGUF input (llama.cpp and Ollama files): header, tensors and config.

A GGUF file is a header (key/value metadata, then one record per tensor: name, shape,
type, offset) followed by the aligned tensor data. The header is parsed here and checked
against the file size before anything is converted, and each tensor is decoded on its
own with numpy, so a 4 GB file never sits in memory at once.

Quantized blocks map exactly onto MLX's affine quantization (group size 32):
Q4_0 (w = d·(n−8)), Q4_1 (w = d·n + m) and Q8_0 (w = d·i8). llama.cpp stores q/k rows
in the interleaved RoPE layout; they are permuted to HF's rotate-half layout here
(a permutation of rows, so it commutes with the quantization along columns).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import mlx.core as mx
import numpy as np

from mlxspec.errors import CheckpointError, ConfigError
from mlxspec.layout import permute_interleaved_to_half
from mlxspec.models.config import ModelArgs

GGUF_MAGIC = b"GGUF"
GROUP_SIZE = 32  # every supported quantized GGUF type uses blocks of 32 weights

# ggml type id -> (name, weights per block, bytes per block); the ones we can decode.
SUPPORTED_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
                   8: ("Q8_0", 32, 34), 30: ("BF16", 1, 2)}
_OTHER_TYPES = {6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K",
                14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
                20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
                27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}
QUANT_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
SUPPORTED_ARCHITECTURES = ("llama", "mistral")

# GGUF metadata value types -> struct format (scalars) ; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<?", 10: "<u8",
          11: "<i8", 12: "<f8"}

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass
class GGUFTensor:
    """One tensor record of the header; `shape` in row-major order (rows first)."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFFile:
    """A parsed, size-checked GGUF header."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]
    data_start: int

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CheckpointError(f"{self.path}: truncated GGUF header")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > 1 << 30:
            raise CheckpointError(f"{self.path}: corrupt GGUF header (string of {n} bytes)")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if count > 1 << 28:
                raise CheckpointError(f"{self.path}: corrupt GGUF header (array of {count} items)")
            if item_type in _NUMPY:
                dtype = np.dtype(_NUMPY[item_type])
                return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
            return [self.value(item_type) for _ in range(count)]
        raise CheckpointError(f"{self.path}: corrupt GGUF header (value type {vtype})")


def tensor_nbytes(name: str, type_id: int, shape: tuple[int, ...], path: Path) -> tuple[str, int]:
    """(type name, bytes) of one tensor, or a clear error for types we cannot decode."""
    if type_id not in SUPPORTED_TYPES:
        type_name = _OTHER_TYPES.get(type_id, f"type {type_id}")
        raise CheckpointError(
            f"{path}: tensor {name!r} is {type_name}, which mlxspec cannot convert "
            f"(supported: {', '.join(t[0] for t in SUPPORTED_TYPES.values())}); "
            "re-quantize the GGUF to Q4_0, Q4_1 or Q8_0, or convert the original checkpoint"
        )
    type_name, block, block_bytes = SUPPORTED_TYPES[type_id]
    count = int(np.prod(shape)) if shape else 1
    if count % block:
        raise CheckpointError(f"{path}: tensor {name!r} has {count} weights, not whole {type_name} blocks")
    return type_name, count // block * block_bytes


def read_header(path: Path) -> GGUFFile:
    """Parse the header of `path` and check every tensor lies inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = _Reader(f, path)
        if r.take(4) != GGUF_MAGIC:
            raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
        version = r.scalar("<I")
        if version not in (2, 3):
            raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.scalar("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.scalar("<I")
            if n_dims > 4:
                raise CheckpointError(f"{path}: corrupt GGUF header (tensor {name!r} with {n_dims} dims)")
            dims = [r.scalar("<Q") for _ in range(n_dims)]
            type_id, offset = r.scalar("<I"), r.scalar("<Q")
            shape = tuple(reversed(dims))  # GGUF lists the fastest-varying dimension first
            type_name, nbytes = tensor_nbytes(name, type_id, shape, path)
            tensors.append(GGUFTensor(name, shape, type_name, offset, nbytes))
        alignment = int(metadata.get("general.alignment", 32))
        data_start = -(-f.tell() // alignment) * alignment
    for t in tensors:
        if data_start + t.offset + t.nbytes > size:
            raise CheckpointError(
                f"{path}: truncated GGUF file (tensor {t.name!r} ends at byte "
                f"{data_start + t.offset + t.nbytes}, file has {size})"
            )
    return GGUFFile(path, version, metadata, tensors, data_start)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned `bits`-bit integers [rows, cols] into MLX's uint32 words (lowest bits first)."""
    per_word = 32 // bits
    rows, cols = values.shape
    words = values.astype(np.uint32).reshape(rows, cols // per_word, per_word)
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)
    return np.bitwise_or.reduce(words << shifts, axis=-1)


def decode_quantized(raw: np.ndarray, type_name: str, rows: int, cols: int) -> tuple[np.ndarray, ...]:
    """GGUF blocks -> MLX affine (packed weight uint32, scales f16, biases f16), exactly."""
    blocks = raw.reshape(rows, cols // GROUP_SIZE, -1)
    d = blocks[..., :2].copy().view(np.float16)[..., 0]
    if type_name == "Q8_0":
        q = blocks[..., 2:].view(np.int8).astype(np.int16) + 128  # w = d * (q - 128)
        return _pack(q.reshape(rows, cols).astype(np.uint8), 8), d, (-128 * d.astype(np.float32)).astype(np.float16)
    if type_name == "Q4_1":
        bias = blocks[..., 2:4].copy().view(np.float16)[..., 0]
        nibbles = blocks[..., 4:]
    else:  # Q4_0: w = d * (n - 8)
        bias = (-8 * d.astype(np.float32)).astype(np.float16)
        nibbles = blocks[..., 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)  # low nibbles are weights 0..15
    return _pack(q.reshape(rows, cols), 4), d, bias


def read_tensor(gguf: GGUFFile, tensor: GGUFTensor) -> np.ndarray | tuple[np.ndarray, ...]:
    """One tensor's data: a float array, or the (weight, scales, biases) of a quantized one."""
    raw = np.fromfile(gguf.path, dtype=np.uint8, count=tensor.nbytes, offset=gguf.data_start + tensor.offset)
    if tensor.type_name in QUANT_BITS:
        rows = int(np.prod(tensor.shape[:-1]))
        return decode_quantized(raw, tensor.type_name, rows, tensor.shape[-1])
    if tensor.type_name == "BF16":
        return raw.view(np.uint16).reshape(tensor.shape)
    return raw.view(np.float32 if tensor.type_name == "F32" else np.float16).reshape(tensor.shape)


def hf_name(name: str) -> str | None:
    """HF name of a llama.cpp tensor name (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`)."""
    base, _, kind = name.rpartition(".")
    if kind != "weight":
        return None
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.weight"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight"
    return None


def model_args(gguf: GGUFFile) -> ModelArgs:
    """The model's shape from the GGUF metadata (`llama.*` keys)."""
    arch = gguf.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"{gguf.path}: unsupported GGUF architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    if gguf.get(f"{arch}.expert_count", 0):
        raise ConfigError(f"{gguf.path}: mixture-of-experts GGUF files are not supported yet")
    if gguf.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise ConfigError(f"{gguf.path}: RoPE scaling {gguf.get(f'{arch}.rope.scaling.type')!r} is not supported")

    def key(name: str, default: Any = KeyError) -> Any:
        value = gguf.get(f"{arch}.{name}", default)
        if value is KeyError:
            raise ConfigError(f"{gguf.path}: GGUF metadata lacks {arch}.{name}")
        return value

    tokens = gguf.get("tokenizer.ggml.tokens") or []
    heads = key("attention.head_count")
    hidden = key("embedding_length")
    names = {t.name for t in gguf.tensors}
    return ModelArgs(
        hidden_size=hidden,
        num_hidden_layers=key("block_count"),
        intermediate_size=key("feed_forward_length"),
        num_attention_heads=heads,
        num_key_value_heads=key("attention.head_count_kv", heads),
        head_dim=key("attention.key_length", hidden // heads),
        vocab_size=key("vocab_size", len(tokens)) or len(tokens),
        rms_norm_eps=float(f"{key('attention.layer_norm_rms_epsilon', 1e-5):.7g}"),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        sliding_window=key("attention.sliding_window", None),
        max_position_embeddings=key("context_length", None),
        tie_word_embeddings="output.weight" not in names,
        model_type="llama" if arch == "llama" else "mistral",
    )


def tensor_loaders(gguf: GGUFFile, args: ModelArgs) -> list[tuple[str, GGUFTensor, Callable[[], Any]]]:
    """(HF name, record, loader) per tensor; loaders return mx arrays, a triple when quantized.
    q/k rows come back in the rotate-half layout."""
    out = []
    for tensor in gguf.tensors:
        name = hf_name(tensor.name)
        if name is None:
            raise CheckpointError(f"{gguf.path}: unexpected tensor {tensor.name!r} in a {args.model_type} GGUF")
        heads = {"q_proj": args.num_attention_heads, "k_proj": args.num_key_value_heads}.get(name.split(".")[-2])

        def load(tensor: GGUFTensor = tensor, heads: int | None = heads) -> Any:
            data = read_tensor(gguf, tensor)
            parts = data if isinstance(data, tuple) else (data,)
            if heads is not None:
                parts = tuple(permute_interleaved_to_half(p, heads) for p in parts)
            arrays = tuple(mx.array(p) for p in parts)
            if tensor.type_name == "BF16":
                arrays = tuple(a.view(mx.bfloat16) for a in arrays)
            return arrays if isinstance(data, tuple) else arrays[0]

        out.append((name, tensor, load))
    return out
