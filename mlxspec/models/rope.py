"""Rotary position embeddings (Su et al. 2021, "RoFormer"), real-valued: each pair of a
query's or key's channels rotated by the angle position x inv_i.

Every static scaling (none, linear, llama3, yarn, longrope; see `rope_scaling`) only changes
the frequencies inv_i, and yarn/longrope multiply q and k by a constant: `mx.fast.rope`
applies them (`freqs=` takes the periods 1/inv_i).

Dynamic NTK scaling changes theta with the sequence length. transformers recomputes the
frequencies for each pass from its longest position, and keeps the keys it rotated before,
so its numbers depend on how a text was cut into passes. Here position p is rotated with the
frequencies of a sequence of p+1 tokens, theta * (factor (p+1)/L - factor + 1)^(d/(d-2))
past the trained context L and plain theta up to it: what transformers computes decoding
token by token, and one rule whatever the passes, so one pass == chunked prefill == step by
step == a speculative round rolled back. Within L positions this is plain RoPE, exactly as
in transformers; beyond L, transformers' (and mlx-lm's) one-pass prefill rotates a whole
prompt with the prompt's length instead, and differs.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .config import ModelArgs
from .rope_scaling import attention_factor, dynamic_exponents, inverse_frequencies


class RoPE(nn.Module):
    """The rotary embedding of one attention layer: `rope(x [B, H, L, D], offset)` rotates x
    as positions offset.. (offset an int, or an array of one offset per row)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        scaling = args.rope_scaling
        self.dims, self.traditional, self.theta = args.head_dim, args.rope_traditional, args.rope_theta
        self.kind = None if scaling is None else scaling["rope_type"]
        self.scale = attention_factor(scaling)
        if self.kind == "dynamic":
            self.factor, self.trained = float(scaling["factor"]), args.max_position_embeddings
            self._inv = mx.array(inverse_frequencies(self.theta, self.dims, None))
            self._exponents = mx.array(dynamic_exponents(self.dims))
        elif self.kind is not None:
            self._periods = mx.array(1.0 / inverse_frequencies(self.theta, self.dims, scaling))

    def __call__(self, x: mx.array, offset: int | mx.array) -> mx.array:
        if self.kind == "dynamic":
            out = self.per_position(x, offset)
        elif self.kind is None:
            out = mx.fast.rope(x, self.dims, traditional=self.traditional, base=self.theta, scale=1.0, offset=offset)
        else:
            out = mx.fast.rope(x, self.dims, traditional=self.traditional, base=None, scale=1.0, offset=offset,
                               freqs=self._periods)
        return out if self.scale == 1.0 else out * self.scale

    def per_position(self, x: mx.array, offset: int | mx.array) -> mx.array:
        """Dynamic NTK: each position rotated with the frequencies of its own length (see above)."""
        start = offset if isinstance(offset, mx.array) else mx.array(offset)
        pos = (start[..., None] + mx.arange(x.shape[-2])).astype(mx.float32)  # [L] or [B, L]
        length = pos + 1
        ratio = mx.where(length > self.trained, self.factor * length / self.trained - (self.factor - 1), 1.0)
        angle = pos[..., None] * (self._inv * ratio[..., None] ** self._exponents)  # [.., L, D/2]
        if angle.ndim == 3:  # one offset per row: [B, 1, L, D/2]
            angle = angle[:, None]
        return rotate(x, mx.cos(angle).astype(x.dtype), mx.sin(angle).astype(x.dtype), self.traditional)


def rotate(x: mx.array, cos: mx.array, sin: mx.array, traditional: bool) -> mx.array:
    """x with each channel pair (a, b) turned to (a cos - b sin, a sin + b cos): pairs are
    (i, i + D/2) in HF's rotate-half layout, (2i, 2i+1) in the traditional one."""
    if traditional:
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return mx.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return mx.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
