"""llama.cpp's K-quant super-blocks (Q4_K, Q5_K, Q6_K) as MLX affine quantization or floats.

A super-block holds 256 weights of a row. Q4_K and Q5_K split it into 8 groups of 32 with
6-bit scales and mins under two f16 factors, w = d·sc·q − dmin·m with q of 4 (5) bits: MLX's
affine form with group size 32, scale d·sc and bias −dmin·m. Those are kept in float32,
since d·sc is rarely an f16; then `mx.dequantize` equals llama.cpp's dequantization (and
the `gguf` package's) bit for bit: d·sc and d·sc·q are exact in float32, and the one
rounding, of d·sc·q − dmin·m, is the same.

Q6_K has 16 groups of 16 with int8 scales, w = d·sc·(q − 32). MLX has no groups of 16, so
those tensors are decoded to their exact float32 values and re-quantized (`requantize`).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .ggml_types import pack

QK_K = 256  # weights per super-block
K_QUANTS = ("Q4_K", "Q5_K", "Q6_K")
REQUANTIZED = {"Q6_K": (8, 32)}  # type -> the (bits, group size) it is re-quantized to
REQUANTIZATION_BOUND = 0.01  # of a tensor's largest |w|; see `requantize`


def decode(raw: np.ndarray, type_name: str, rows: int, cols: int) -> np.ndarray | tuple[np.ndarray, ...]:
    """One K-quant tensor [rows, cols]: (packed uint32 weight, f32 scales, f32 biases) in MLX's
    affine form for Q4_K and Q5_K, its float32 values for Q6_K."""
    blocks = raw.reshape(rows, cols // QK_K, -1)
    if type_name == "Q6_K":
        return _q6_k_values(blocks).reshape(rows, cols)
    return _affine(blocks, five_bits=type_name == "Q5_K")


def _f16(field: np.ndarray) -> np.ndarray:
    """A 2-byte field of every block [..., 2] as float32 [..., 1]."""
    return field.copy().view(np.float16).astype(np.float32)


def _scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and mins packed in 12 bytes (llama.cpp's `get_scale_min_k4`)."""
    d, m, low = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate([d & 63, (low & 15) | ((d >> 2) & 48)], axis=-1)
    mins = np.concatenate([m & 63, (low >> 4) | ((m >> 2) & 48)], axis=-1)
    return scales, mins


def _affine(blocks: np.ndarray, five_bits: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K [rows, n, 144] / Q5_K [rows, n, 176] blocks -> MLX affine, group size 32."""
    rows, n = blocks.shape[:2]
    scales, mins = _scales_mins(blocks[..., 4:16])
    scale = (_f16(blocks[..., 0:2]) * scales).reshape(rows, n * 8)  # exact in float32
    bias = -(_f16(blocks[..., 2:4]) * mins).reshape(rows, n * 8)
    nibbles = blocks[..., -128:].reshape(rows, n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(2, 1)
    q = (nibbles & 15).reshape(rows, n, 8, 32)  # bytes 32c..32c+31: group 2c low, 2c+1 high nibbles
    if five_bits:  # bit j of qh[0:32] is the fifth bit of group j
        high = blocks[..., 16:48].reshape(rows, n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(8, 1)
        q = q | ((high & 1) << 4)
    return pack(q.reshape(rows, n * QK_K), 5 if five_bits else 4), scale, bias


def _q6_k_values(blocks: np.ndarray) -> np.ndarray:
    """Q6_K blocks [rows, n, 210] (ql[128], qh[64], int8 scales[16], f16 d) -> float32
    [rows, n, 16, 16], exactly: d·sc·(q − 32) needs at most 23 significant bits."""
    rows, n = blocks.shape[:2]
    low = blocks[..., :128].reshape(rows, n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(2, 1)
    high = blocks[..., 128:192].reshape(rows, n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    q = ((low & 15).reshape(rows, n, 8, 32) | ((high & 3).reshape(rows, n, 8, 32) << 4)).astype(np.int8) - 32
    scale = _f16(blocks[..., 208:210]) * blocks[..., 192:208].copy().view(np.int8)
    return scale[..., None] * q.reshape(rows, n, 16, 16)


def requantize(values: mx.array, bits: int, group_size: int) -> tuple[tuple[mx.array, ...], mx.array]:
    """Float32 `values` (a Q6_K tensor's) as MLX affine (weight, f16 scales, f16 biases),
    and the error made: max |ŵ − w| / max |w| over the tensor.

    Q6_K goes to 8 bits in groups of 32 (9 bits a weight, against Q6_K's 6.56): 6 bits in
    groups of 32 (7 bits a weight) would add about as much error as Q6_K's own rounding,
    8 bits about a quarter of it. Bound: MLX's rounding moves a weight by at most one step
    of its group, (max − min)/255 ≤ 2·m/255 where m is the group's largest |w|, and the f16
    scale and bias add at most 3·m/2048; so the error stays under 1% (REQUANTIZATION_BOUND)."""
    weight, scales, biases = mx.quantize(values, group_size=group_size, bits=bits)
    scales, biases = scales.astype(mx.float16), biases.astype(mx.float16)
    back = mx.dequantize(weight, scales.astype(mx.float32), biases.astype(mx.float32),
                         group_size=group_size, bits=bits)
    largest = mx.maximum(mx.abs(values).max(), mx.array(np.finfo(np.float32).tiny))
    return (weight, scales, biases), mx.abs(back - values).max() / largest
