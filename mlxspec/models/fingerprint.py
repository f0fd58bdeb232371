"""What identifies a model's shape for measurements made on it (the calibration's round
times): its configuration and the first few of its parameters' names, dtypes and shapes."""

from __future__ import annotations

from dataclasses import asdict

import mlx.nn as nn
from mlx.utils import tree_flatten


def fingerprint(module: nn.Module) -> dict:
    """A JSON-able description of `module`'s configuration (`args`) and parameters."""
    params = sorted((k, str(v.dtype), v.shape) for k, v in tree_flatten(module.parameters()))
    return {"args": asdict(module.args), "params": params[:4], "n": len(params)}
