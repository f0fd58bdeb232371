"""ggml tensor types in GGUF files: which ones mlxspec decodes, their size in bytes, and
the exact mapping of the 32-weight block types onto MLX's affine quantization.

Q4_0 (w = d·(n−8)), Q4_1 (w = d·n + m) and Q8_0 (w = d·i8) map exactly onto MLX's affine
quantization with group size 32, blocks running along rows. The K-quants' 256-weight
super-blocks are decoded in `kquants`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mlxspec.errors import CheckpointError

GROUP_SIZE = 32  # Q4_0, Q4_1 and Q8_0 blocks hold 32 weights

# ggml type id -> (name, weights per block, bytes per block); the ones we can decode.
SUPPORTED_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
                   8: ("Q8_0", 32, 34), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
                   14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2)}
_OTHER_TYPES = {6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS",
                17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
                24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0",
                39: "MXFP4"}
# Types stored as MLX affine quantization, exactly: name -> (bits, group size).
QUANT_FORMATS = {"Q4_0": (4, 32), "Q4_1": (4, 32), "Q8_0": (8, 32), "Q4_K": (4, 32), "Q5_K": (5, 32)}
QUANT_BITS = {name: bits for name, (bits, _) in QUANT_FORMATS.items()}


def tensor_nbytes(name: str, type_id: int, shape: tuple[int, ...], path: Path) -> tuple[str, int]:
    """(type name, bytes) of one tensor, or a clear error for types we cannot decode."""
    if type_id not in SUPPORTED_TYPES:
        type_name = _OTHER_TYPES.get(type_id, f"type {type_id}")
        raise CheckpointError(
            f"{path}: tensor {name!r} is {type_name}, which mlxspec cannot convert "
            f"(supported: {', '.join(t[0] for t in SUPPORTED_TYPES.values())}); "
            "re-quantize the GGUF to those (a Q4_K_M, Q5_K_M, Q6_K or Q8_0 file), "
            "or convert the original checkpoint"
        )
    type_name, block, block_bytes = SUPPORTED_TYPES[type_id]
    if not all(shape):
        raise CheckpointError(f"{path}: tensor {name!r} has shape {shape}, with a dimension of 0")
    if (shape[-1] if shape else 1) % block:  # blocks run along rows
        raise CheckpointError(f"{path}: tensor {name!r} has rows of {shape[-1] if shape else 1} weights, "
                              f"not whole {type_name} blocks of {block}")
    return type_name, math.prod(shape) // block * block_bytes


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned `bits`-bit integers [rows, cols] (cols a multiple of 32) into MLX's
    uint32 words: one little-endian bit stream per row, lowest bits first."""
    rows, cols = values.shape
    eights = values.reshape(rows, cols // 8, 8)
    stream = np.zeros((rows, cols // 8), dtype=np.uint64)  # 8 values = `bits` bytes (<= 64 bits)
    for k in range(8):
        stream |= eights[..., k].astype(np.uint64) << np.uint64(k * bits)
    packed = stream.astype("<u8", copy=False).view(np.uint8).reshape(rows, cols // 8, 8)[..., :bits]
    return np.ascontiguousarray(packed).reshape(rows, -1).view("<u4")


def decode_quantized(raw: np.ndarray, type_name: str, rows: int, cols: int) -> tuple[np.ndarray, ...]:
    """GGUF blocks -> MLX affine (packed weight uint32, scales f16, biases f16), exactly."""
    blocks = raw.reshape(rows, cols // GROUP_SIZE, -1)
    d = blocks[..., :2].copy().view(np.float16)[..., 0]
    if type_name == "Q8_0":
        q = blocks[..., 2:].view(np.int8).astype(np.int16) + 128  # w = d * (q - 128)
        return pack(q.reshape(rows, cols).astype(np.uint8), 8), d, (-128 * d.astype(np.float32)).astype(np.float16)
    if type_name == "Q4_1":
        bias = blocks[..., 2:4].copy().view(np.float16)[..., 0]
        nibbles = blocks[..., 4:]
    else:  # Q4_0: w = d * (n - 8)
        bias = (-8 * d.astype(np.float32)).astype(np.float16)
        nibbles = blocks[..., 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)  # low nibbles are weights 0..15
    return pack(q.reshape(rows, cols), 4), d, bias
