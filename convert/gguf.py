"""GGUF input (llama.cpp and Ollama files): header, tensors and config.

A GGUF file is a header (key/value metadata, then one record per tensor: name, shape,
type, offset) followed by the aligned tensor data. The header is parsed here and checked
before anything is converted: every count and length against the bytes left in the file
before it is read, no duplicate key or tensor, a power-of-two alignment, tensors aligned,
disjoint and inside the file, metadata of the right type and range. Text values that are
not valid UTF-8 are decoded with U+FFFD replacement characters (they are text for people:
templates, tokens); keys and tensor names are identifiers, and one that is not valid UTF-8
rejects the file. Each tensor is decoded on its own with numpy, so a 4 GB file never sits
in memory at once.

llama.cpp stores the q/k rows of LLaMA-style files in the interleaved RoPE layout; they are
permuted to HF's rotate-half layout here (a permutation of rows, so it commutes with the
quantization along columns, see `ggml_types`). Qwen files keep HF's order (the family says
which: `Family.gguf_interleaved`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import mlx.core as mx
import numpy as np

from mlxspec.errors import CheckpointError
from mlxspec.layout import permute_interleaved_to_half
from mlxspec.models.config import ModelArgs
from mlxspec.models.families import GGUF_ARCHITECTURES
from mlxspec.validate import is_int

from . import kquants
from .ggml_types import QUANT_BITS, decode_quantized, tensor_nbytes

GGUF_MAGIC = b"GGUF"
ROPE_FREQS = "rope_freqs.weight"  # RoPE frequency factors: configuration, not a weight (`gguf_config`)

# GGUF metadata value types -> struct format (scalars) ; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<?", 10: "<u8",
          11: "<i8", 12: "<f8"}

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    # Mixtral: the router and the experts, stacked [experts, out, in]
    "ffn_gate_inp": "block_sparse_moe.gate", "ffn_gate_exps": "block_sparse_moe.switch_mlp.gate_proj",
    "ffn_up_exps": "block_sparse_moe.switch_mlp.up_proj", "ffn_down_exps": "block_sparse_moe.switch_mlp.down_proj",
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
    """The header's little-endian fields; a length is checked against the bytes left in
    the file before anything is read, so a lying count never becomes an allocation."""

    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    def take(self, n: int) -> bytes:
        if n > self.size - self.f.tell():
            raise CheckpointError(f"{self.path}: truncated GGUF header")
        return self.f.read(n)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self, identifier: bool = False) -> str:
        data = self.take(self.scalar("<Q"))
        try:
            return data.decode("utf-8", errors="strict" if identifier else "replace")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: corrupt GGUF header (key or tensor name {data[:40]!r} "
                                  "is not UTF-8)") from None

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype != 9:
            raise CheckpointError(f"{self.path}: corrupt GGUF header (value type {vtype})")
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if item_type in _NUMPY:
            dtype = np.dtype(_NUMPY[item_type])
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
        if item_type != 8:  # arrays of arrays: llama.cpp reads none either
            raise CheckpointError(f"{self.path}: corrupt GGUF header (array of value type {item_type})")
        if count * 8 > self.size - self.f.tell():  # each string takes 8 bytes or more
            raise CheckpointError(f"{self.path}: truncated GGUF header")
        return [self.string() for _ in range(count)]


def read_header(path: Path) -> GGUFFile:
    """Parse the header of `path` and check every tensor lies inside the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            r = _Reader(f, path, size)
            if r.take(4) != GGUF_MAGIC:
                raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
            version = r.scalar("<I")
            if version not in (2, 3):
                raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
            if 13 * n_kv + 24 * n_tensors > size:  # the fewest bytes a key/value and a tensor record take
                raise CheckpointError(f"{path}: truncated or corrupt GGUF header ({n_kv} keys and {n_tensors} "
                                      f"tensors cannot fit in {size} bytes)")
            metadata = _read_metadata(r, n_kv)
            tensors = _read_tensors(r, n_tensors)
            alignment = metadata.get("general.alignment", 32)
            if not is_int(alignment) or alignment <= 0 or alignment & (alignment - 1):
                raise CheckpointError(f"{path}: general.alignment must be a power of two, got {show(alignment)}")
            data_start = -(-f.tell() // alignment) * alignment
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    _check_layout(path, tensors, alignment, data_start, size)
    return GGUFFile(path, version, metadata, tensors, data_start)


def _read_metadata(r: _Reader, count: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for _ in range(count):
        key = r.string(identifier=True)
        if key in metadata:
            raise CheckpointError(f"{r.path}: corrupt GGUF header (metadata key {key!r} appears twice)")
        metadata[key] = r.value(r.scalar("<I"))
    return metadata


def _read_tensors(r: _Reader, count: int) -> list[GGUFTensor]:
    tensors: dict[str, GGUFTensor] = {}
    for _ in range(count):
        name = r.string(identifier=True)
        if name in tensors:
            raise CheckpointError(f"{r.path}: corrupt GGUF header (tensor {name!r} appears twice)")
        n_dims = r.scalar("<I")
        if n_dims > 4:
            raise CheckpointError(f"{r.path}: corrupt GGUF header (tensor {name!r} with {n_dims} dims)")
        dims = [r.scalar("<Q") for _ in range(n_dims)]
        type_id, offset = r.scalar("<I"), r.scalar("<Q")
        shape = tuple(reversed(dims))  # GGUF lists the fastest-varying dimension first
        type_name, nbytes = tensor_nbytes(name, type_id, shape, r.path)
        tensors[name] = GGUFTensor(name, shape, type_name, offset, nbytes)
    return list(tensors.values())


def _check_layout(path: Path, tensors: list[GGUFTensor], alignment: int, data_start: int, size: int) -> None:
    """Tensors start aligned, do not overlap and end inside the file."""
    end = 0
    for t in sorted(tensors, key=lambda t: t.offset):
        if t.offset % alignment:
            raise CheckpointError(f"{path}: tensor {t.name!r} starts at offset {t.offset}, "
                                  f"not a multiple of the alignment {alignment}")
        if t.offset < end:
            raise CheckpointError(f"{path}: tensor {t.name!r} overlaps the tensor before it")
        end = t.offset + t.nbytes
        if data_start + end > size:
            raise CheckpointError(f"{path}: truncated GGUF file (tensor {t.name!r} ends at byte "
                                  f"{data_start + end}, file has {size})")


def read_tensor(gguf: GGUFFile, tensor: GGUFTensor) -> np.ndarray | tuple[np.ndarray, ...]:
    """One tensor's data: a float array, or the MLX (weight, scales, biases) of a quantized
    one that maps exactly (Q6_K, which does not, comes as its float32 values)."""
    raw = np.fromfile(gguf.path, dtype=np.uint8, count=tensor.nbytes, offset=gguf.data_start + tensor.offset)
    rows = int(np.prod(tensor.shape[:-1]))
    if tensor.type_name in kquants.K_QUANTS:
        data = kquants.decode(raw, tensor.type_name, rows, tensor.shape[-1])
    elif tensor.type_name in QUANT_BITS:
        data = decode_quantized(raw, tensor.type_name, rows, tensor.shape[-1])
    if tensor.type_name in kquants.K_QUANTS or tensor.type_name in QUANT_BITS:  # stacked experts keep their axis
        return tuple(p.reshape(*tensor.shape[:-1], -1) for p in data) if isinstance(data, tuple) \
            else data.reshape(tensor.shape)
    if tensor.type_name == "BF16":
        return raw.view(np.uint16).reshape(tensor.shape)
    return raw.view(np.float32 if tensor.type_name == "F32" else np.float16).reshape(tensor.shape)


def hf_name(name: str) -> str | None:
    """HF name of a llama.cpp tensor name (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`,
    `blk.3.attn_q.bias` -> `...q_proj.bias`)."""
    base, _, kind = name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if base in _TOP_NAMES and kind == "weight":
        return f"{_TOP_NAMES[base]}.weight"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{kind}"
    return None


def tensor_loaders(gguf: GGUFFile, args: ModelArgs) -> list[tuple[str, GGUFTensor, Callable[[], Any]]]:
    """(HF name, record, loader) per weight; loaders return mx arrays, a triple when quantized.
    q/k rows (and biases) come back in the rotate-half layout."""
    out = []
    interleaved = GGUF_ARCHITECTURES[gguf.get("general.architecture")].gguf_interleaved
    for tensor in gguf.tensors:
        if tensor.name == ROPE_FREQS:
            continue
        name = hf_name(tensor.name)
        if name is None:
            raise CheckpointError(f"{gguf.path}: unexpected tensor {tensor.name!r} in a {args.model_type} GGUF")
        heads = {"q_proj": args.num_attention_heads, "k_proj": args.num_key_value_heads}.get(name.split(".")[-2])
        heads = heads if interleaved else None

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


def show(value: Any) -> str:
    """A metadata value for an error message, cut short (arrays can be long)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
