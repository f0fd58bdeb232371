"""A dense layer that can multiply in either order.

For an input of a few rows (a speculative round verifies 2-6 tokens) `x Wᵀ` and `(W xᵀ)ᵀ`
give the same numbers, but which is faster is the backend's business: on some BLAS
libraries the weight-first order runs a different, quicker kernel. Nothing here decides
which to use: the calibration (`mlxspec.engine.calibrate`) measures both on the running
device and the session applies its finding with `set_weight_first_rows`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class Linear(nn.Linear):
    """`nn.Linear` (same weights, same checkpoint keys) that multiplies inputs of
    2..`weight_first_rows` rows weight-first; 0 (the default) never does."""

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True) -> None:
        super().__init__(input_dims, output_dims, bias=bias)
        self.weight_first_rows = 0

    def __call__(self, x: mx.array) -> mx.array:
        rows = x.size // x.shape[-1]
        if not 1 < rows <= self.weight_first_rows:
            return super().__call__(x)
        y = (self.weight @ x.reshape(rows, -1).T).T.reshape(*x.shape[:-1], -1)
        return y + self.bias if "bias" in self else y


def set_weight_first_rows(model: nn.Module, rows: int) -> None:
    """Multiply inputs of 2..`rows` rows weight-first in every dense `Linear` of `model`
    (0: never). Quantized layers are unaffected."""
    for module in model.modules():
        if isinstance(module, Linear):
            module.weight_first_rows = rows
