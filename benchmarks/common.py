"""Shared helpers for the benchmarks: environment facts, timing, table writing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import mlx.core as mx

RESULTS = Path(__file__).resolve().parent / "results"


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
    """What the numbers depend on: backend, device, BLAS, versions."""
    import mlx_lm

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm.__version__,
        "device": str(mx.default_device()),
        "metal": mx.metal.is_available(),
        "blas": blas_in_use(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }


def timed_tokens(tokens: Iterable[int]) -> Iterator[tuple[int, float]]:
    """Yield (token, seconds since the iteration started) for each token a generator gives."""
    start = time.perf_counter()
    for token in tokens:
        yield token, time.perf_counter() - start


def rates(stamps: list[float], prompt_len: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) from the arrival time of each generated token.

    Prefill: the prompt over the time to the first token. Decode: the tokens after the
    first over the time between the first and the last."""
    prefill = prompt_len / stamps[0]
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return prefill, decode


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(name: str, payload: dict, table: list[str], out_dir: Path = RESULTS) -> Path:
    """Write `<name>.json` and `<name>.md` (the Markdown table plus the environment)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    env = payload["environment"]
    lines = [f"# {name}", "", *table, "", "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items())]
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n")
    return out_dir / f"{name}.md"
