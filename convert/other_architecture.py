"""Converting a checkpoint of an architecture outside mlxspec's port: mlx-lm's own model
class loads and sanitises it (`mlxspec.load_mlx_lm`), casts or quantizes it as `convert`
would, and mlx-lm's writer saves it, with the tokenizer files beside it. The folder loads
back through mlx-lm (`mlxspec.load`) like any `mlx_lm convert` output."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxspec.errors import CheckpointError
from mlxspec.load_mlx_lm import load_mlx_lm_lazily

from .sources import TOKENIZER_FILES


def write_other_architecture(root: Path, config: dict[str, Any], folder: Path, bits: int | None, group_size: int,
                             dtype: mx.Dtype | None) -> None:
    """`root`'s model written into `folder` by mlx-lm (`bits`: quantized, affine, `group_size`)."""
    from mlx_lm.utils import quantize_model, save_config, save_model

    lm, written = load_mlx_lm_lazily(root, config)
    if written.get("quantization") and bits is not None:
        raise CheckpointError(f"{root}: already quantized; convert from the full-precision checkpoint")
    if dtype is not None:
        lm.set_dtype(dtype)
    if bits is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints its bits per weight
            lm, written = quantize_model(lm, written, group_size, bits)
    save_model(folder, lm)
    save_config(written, folder / "config.json")
    for name in [*TOKENIZER_FILES, *(p.name for p in sorted(root.glob("tokenizer.model.*")))]:
        if (root / name).is_file():
            shutil.copy(root / name, folder / name)
