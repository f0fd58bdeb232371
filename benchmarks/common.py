"""Shared by the benchmarks: where results go, the synthetic checkpoints (they live with the
tests), timing token streams."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # synthetic.py: random-weight checkpoints in the real layouts


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
