"""What measured numbers depend on: platform, backend and device, BLAS, versions."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import mlx.core as mx


def blas_in_use() -> str:
    """Which BLAS library the process mapped (Linux: from /proc/self/maps)."""
    if sys.platform == "darwin":
        return "Accelerate (macOS)"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    libs = sorted({line.split()[-1] for line in maps.splitlines() if "blas" in line.lower() and "/" in line})
    return ", ".join(libs) or "bundled with mlx"


def environment() -> dict:
    """Platform, CPU count, MLX and mlx-lm versions, the device, Metal, the BLAS in use."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mlx_lm = version("mlx-lm")
    except PackageNotFoundError:
        mlx_lm = "not installed"
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm,
        "device": str(mx.default_device()),
        "metal": mx.metal.is_available(),
        "blas": blas_in_use(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }
