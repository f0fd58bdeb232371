"""What identifies a model's shape for measurements made on it (the calibration's round
times): its configuration, the first few of its parameters' names, dtypes and shapes, and
the adapter it carries, if any (`mlxspec.adapters`)."""

from __future__ import annotations

from dataclasses import asdict

import mlx.nn as nn
from mlx.utils import tree_flatten


def fingerprint(module: nn.Module) -> dict:
    """A JSON-able description of `module`'s configuration (`args`) and parameters."""
    params = sorted((k, str(v.dtype), v.shape) for k, v in tree_flatten(module.parameters()))
    found = {"args": asdict(module.args), "params": params[:4], "n": len(params)}
    if getattr(module, "adapter_id", None) is not None:
        found["adapter"] = module.adapter_id
    return found
