"""Decoding speed a chip should reach, from the bytes a token reads: decoding is memory-bound,
so plain tok/s = EFFICIENCY x bandwidth / bytes read per token, one efficiency for every chip
(fitted to llama.cpp's LLaMA-7B Q4_0 text generation figures, README "mlxspec plan"). A
speculative round drafting k tokens reads the draft k times and the target once and yields
(1 - a^(k+1)) / (1 - a) tokens at acceptance a; the best k up to `K_MAX` is projected."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EFFICIENCY = 0.72  # share of the chip's bandwidth a decoding step achieves (llama.cpp on Metal)
ASSUMED_ACCEPTANCE = 0.7  # a draft model of the target's family, greedy; used when none is measured
K_MAX = 8


@dataclass(frozen=True)
class Acceptance:
    """An acceptance rate and where it comes from: 'given', 'measured (...)' or 'assumed'."""

    rate: float
    source: str


@dataclass(frozen=True)
class Projection:
    """Projected tok/s: plain, and speculative with its draft length k (None without a draft)."""

    bandwidth: float
    plain: float
    speculative: float | None = None
    k: int | None = None
    acceptance: Acceptance | None = None


def tokens_per_round(rate: float, k: int) -> float:
    """Expected tokens a round yields drafting k at acceptance `rate` (each position alike)."""
    return float(k + 1) if rate >= 1 else (1 - rate ** (k + 1)) / (1 - rate)


def project(bandwidth_gbs: float, target_bytes: int, draft_bytes: int | None,
            acceptance: Acceptance | None) -> Projection:
    """Plain and speculative tok/s at `bandwidth_gbs` for steps reading these many bytes."""
    rate = EFFICIENCY * bandwidth_gbs * 1e9
    plain = rate / target_bytes
    if draft_bytes is None or acceptance is None:
        return Projection(bandwidth_gbs, plain)
    t_target, t_draft = target_bytes / rate, draft_bytes / rate
    best, best_k = plain, 0
    for k in range(1, K_MAX + 1):
        tps = tokens_per_round(acceptance.rate, k) / (t_target + k * t_draft)
        if tps > best:
            best, best_k = tps, k
    return Projection(bandwidth_gbs, plain, best, best_k, acceptance)


def draft_acceptance(draft_folder: Path | None, given: float | None) -> Acceptance:
    """The acceptance to project with: `given`, else the one `mlxspec distill` measured on this
    device for a draft it wrote (training.json, greedy, mean over draft positions), else assumed."""
    if given is not None:
        return Acceptance(given, "given (--acceptance)")
    record = draft_folder / "training.json" if draft_folder is not None else None
    if record is not None and record.is_file():
        try:
            rates = json.loads(record.read_text())["evaluation"]["acceptance_T0"]
            if rates and all(0 <= r <= 1 for r in rates):
                return Acceptance(sum(rates) / len(rates), "measured on this device by mlxspec distill (T=0)")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return Acceptance(ASSUMED_ACCEPTANCE, "assumed")
