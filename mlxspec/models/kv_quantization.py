"""A quantized key/value cache: what a cache slot stores, and attention that reads it.

Each position's key (and value) vector is quantized on its own, in groups of `group_size`
along head_dim (`mx.quantize`: packed integers, one scale and one bias per group). So a
slot still holds exactly one position, and the caches' slot bookkeeping (positions per
slot, rollback = rewinding the offset, the rolling buffer's wrap) does not change: only
what a slot stores does. A cache keeps its keys and values as `Stored`: one array (full
precision) or a `(packed, scales, biases)` tuple, all `[B, heads, slots, ...]`, and moves
slots with `each` (every operation along the first three axes applies to every part).

Every attention over a quantized cache reads the quantized keys and values, the new
tokens' own included, so a position's numbers do not depend on which pass fed it: plain
and speculative decoding see the same values. Decoding and verification passes (a few
queries, bound by memory reads) multiply the packed data directly; a prefill chunk (more
than `PACKED_QUERIES` queries, bound by arithmetic) attends over the same values
dequantized, one layer at a time: 3-4x faster on the CPU backend for a 256-token chunk, and
equal up to float rounding. At 4 bits and groups of 64 a float16
element takes 4 + 2 * 16 / 64 = 4.5 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mlx.core as mx

from ..errors import InputError

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
PACKED_QUERIES = 16  # passes of up to this many queries attend over the packed data itself

Stored = mx.array | tuple[mx.array, mx.array, mx.array]


@dataclass(frozen=True)
class KVQuantization:
    """How a cache stores keys and values: `bits` per element in groups of `group_size`."""

    bits: int
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        check_values(self.bits, self.group_size)

    def check(self, head_dim: int, whose: str = "the model") -> None:
        """Raise `InputError` when `head_dim` does not split into whole groups."""
        if head_dim % self.group_size:
            fits = [str(g) for g in GROUP_SIZES if head_dim % g == 0]
            hint = f"use {' or '.join(fits)}" if fits else "no group size fits it: run without kv_bits"
            raise InputError(f"kv_group_size {self.group_size} does not divide {whose}'s head_dim {head_dim}; {hint}")

    def encode(self, x: mx.array) -> Stored:
        """`x` [B, H, n, D] as stored: (packed, scales, biases)."""
        return tuple(mx.quantize(x, group_size=self.group_size, bits=self.bits))


def check_values(bits: object, group_size: object, names: tuple[str, str] = ("kv_bits", "kv_group_size")) -> None:
    """`InputError` naming the option (`names`) for bits or a group size no cache can take
    (None bits: full precision)."""
    if bits is not None and (isinstance(bits, bool) or bits not in BITS):
        raise InputError(f"{names[0]} must be {' or '.join(map(str, BITS))}, got {bits!r}")
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise InputError(f"{names[1]} must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size!r}")


def kv_quantization(bits: int | None, group_size: int = DEFAULT_GROUP_SIZE) -> KVQuantization | None:
    """The setting for `kv_bits`/`kv_group_size` (None bits: full precision)."""
    check_values(bits, group_size)
    return None if bits is None else KVQuantization(bits, group_size)


def kv_keyword(kv: KVQuantization | None) -> dict:
    """`{"kv": kv}` to pass on, or nothing for full precision: a model's `make_cache` or a
    draft kind's `drafter` written before the option (a wrapper, a kind of one's own)
    still works where no quantization is asked for."""
    return {} if kv is None else {"kv": kv}


def encode(kv: KVQuantization | None, x: mx.array) -> Stored:
    """`x` as a cache with setting `kv` stores it."""
    return x if kv is None else kv.encode(x)


def each(f: Callable[..., mx.array], *stored: Stored) -> Stored:
    """`f` applied to every part of `stored` (parts taken together across arguments)."""
    if isinstance(stored[0], tuple):
        return tuple(f(*parts) for parts in zip(*stored))
    return f(*stored)


def parts(stored: Stored | None) -> list[mx.array]:
    """The arrays of `stored` (none for None)."""
    if stored is None:
        return []
    return list(stored) if isinstance(stored, tuple) else [stored]


def nbytes(stored: Stored | None) -> int:
    """Bytes held by `stored`."""
    return sum(a.nbytes for a in parts(stored))


def slots(stored: Stored) -> int:
    """Slots (axis 2) of `stored`."""
    return parts(stored)[0].shape[2]


def quantized_attention(q: mx.array, k: tuple, v: tuple, scale: float, mask) -> mx.array:
    """Scaled dot-product attention of queries `q` [B, n_heads, L, D] over quantized keys
    and values [B, n_kv_heads, T, ...]: for a few queries mlx-lm's way (`quantized_matmul`
    on the packed data, no dequantized copy of the cache), for a prefill chunk over this
    layer's keys dequantized (see the module docstring); `mask` as for
    `mx.fast.scaled_dot_product_attention`."""
    B, n_heads, L, D = q.shape
    n_kv = k[0].shape[1]
    group_size = D // k[1].shape[-1]
    bits = k[0].shape[-1] * 32 // D
    if L > PACKED_QUERIES:  # a prefill chunk: the same values, dequantized for this layer alone
        k, v = (mx.dequantize(*a, group_size=group_size, bits=bits) for a in (k, v))
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    repeats = n_heads // n_kv
    q = q * scale
    if repeats > 1:
        q = q.reshape(B, n_kv, repeats, L, D)
        k = tuple(mx.expand_dims(a, 2) for a in k)
        v = tuple(mx.expand_dims(a, 2) for a in v)
    scores = mx.quantized_matmul(q, *k, transpose=True, group_size=group_size, bits=bits)
    if isinstance(mask, str):
        T = scores.shape[-1]
        mask = mx.arange(T - L, T)[:, None] >= mx.arange(T)[None]
    if mask is not None:
        if repeats > 1 and mask.ndim == 4:
            mask = mx.expand_dims(mask, 2)  # [B, 1, L, T] -> [B, 1, 1, L, T]
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    weights = mx.softmax(scores, axis=-1, precise=True)
    out = mx.quantized_matmul(weights, *v, transpose=False, group_size=group_size, bits=bits)
    return out.reshape(B, n_heads, L, D)
