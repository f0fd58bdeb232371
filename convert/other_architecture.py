"""Converting a checkpoint of an architecture outside mlxspec's port: mlx-lm's own model
class loads and sanitises it (`mlxspec.load_mlx_lm`), casts or quantizes it as `convert`
would, and mlx-lm's writer saves it, with the tokenizer files beside it. The folder loads
back through mlx-lm (`mlxspec.load`) like any `mlx_lm convert` output."""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxspec.errors import CheckpointError, ConfigError
from mlxspec.load_mlx_lm import known_to_mlx_lm, load_mlx_lm_lazily, unknown_architecture
from mlxspec.models.config import port_supports, read_json
from mlxspec.models.families import FAMILIES
from mlxspec.text import Tokenizer, load_tokenizer

from .sources import TOKENIZER_FILES


@dataclass
class OtherArchitecture:
    """A checkpoint mlx-lm's model class converts (the counterpart of `sources.Source`)."""

    root: Path
    config: dict[str, Any]

    @property
    def vocab_size(self) -> int:
        """Embedding rows, from the config (or its text model's)."""
        text = self.config.get("text_config") if isinstance(self.config.get("text_config"), dict) else self.config
        vocab = text.get("vocab_size")
        if type(vocab) is not int or vocab <= 0:
            raise ConfigError(f"{self.root / 'config.json'}: vocab_size must be a positive integer, got {vocab!r}")
        return vocab

    def tokenizer(self) -> Tokenizer | None:
        """The tokenizer beside the weights (None when there is none), checked against the rows."""
        if not any((self.root / name).is_file() for name in TOKENIZER_FILES):
            return None
        tokenizer = load_tokenizer(self.root)
        if tokenizer.vocab_size > self.vocab_size:
            raise ConfigError(f"{self.root}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                              f"only {self.vocab_size} embedding rows")
        return tokenizer

    def write(self, folder: Path, bits: int | None, group_size: int, dtype: mx.Dtype | None,
              adapter: Any = None) -> None:
        """The model written into `folder` by mlx-lm (`bits`: quantized, affine, `group_size`),
        with `adapter` (a checked `mlxspec.adapters.Adapter`) folded in first."""
        from mlx_lm.utils import quantize_model, save_config, save_model

        from .adapter_fusion import FusionWarning, fold_into_mlx_lm

        lm, written = load_mlx_lm_lazily(self.root, self.config)
        if written.get("quantization") and bits is not None:
            raise CheckpointError(f"{self.root}: already quantized; convert from the full-precision checkpoint")
        if adapter is not None:
            lm, written, quant = fold_into_mlx_lm(lm, written, adapter)
            if quant is not None:  # quantized again as it was
                bits, group_size = quant.get("bits", 4), quant.get("group_size", 64)
                warnings.warn(f"{self.root}: quantized weights expanded, folded with the adapter and quantized "
                              f"again at {bits} bits", FusionWarning, stacklevel=3)
        if dtype is not None:
            lm.set_dtype(dtype)
        if bits is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints its bits per weight
                lm, written = quantize_model(lm, written, group_size, bits)
        save_model(folder, lm)
        save_config(written, folder / "config.json")
        for name in [*TOKENIZER_FILES, *(p.name for p in sorted(self.root.glob("tokenizer.model.*")))]:
            if (self.root / name).is_file():
                shutil.copy(self.root / name, folder / name)


def other_architecture(root: Path) -> OtherArchitecture | None:
    """The checkpoint at `root` when mlx-lm, not the port, converts it; None for the port's
    (and for GGUF files and Mistral folders). One line for an architecture neither knows."""
    if not root.is_dir() or not (root / "config.json").is_file():
        return None
    config = read_json(root / "config.json")
    if port_supports(config):
        return None
    if not known_to_mlx_lm(config):
        raise unknown_architecture(root, config.get("model_type"), tuple(FAMILIES))
    return OtherArchitecture(root, config)
