"""Where mlxspec keeps what it measures and converts for itself."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$MLXSPEC_CACHE, else ~/.cache/mlxspec: the calibrations and the converted demo target."""
    return Path(os.environ.get("MLXSPEC_CACHE") or Path.home() / ".cache" / "mlxspec")
