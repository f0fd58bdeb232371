"""From timed runs to report rows: decode rates, acceptance per draft position, the cost
model's predicted speedup next to the measured one, and the comparisons between engines.
Rates are decode rates: tokens after the first over the time after the first token; time to
first token is reported apart. The prediction for a fixed k uses the acceptance measured
per draft position and the calibrated round times at the run's temperature:
speedup = (1 + sum_j P(first j accepted)) * t_round(0) / t_round(k)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..engine import GenerationStats, SpeculativeStats, Timings

SCHEMA_VERSION = 6  # bumped whenever the report's fields change (6: kv_cache)


@dataclass
class Config:
    """One way of decoding: engine ("mlxspec" | "mlx-lm"), k (0 = plain), adaptive."""

    engine: str
    k: int
    adaptive: bool = False

    @property
    def label(self) -> str:
        mode = "plain" if self.k == 0 else ("adaptive" if self.adaptive else f"k={self.k}")
        return f"{self.engine} {mode}"


@dataclass
class Run:
    """What one generation measured."""

    tokens: int
    ttft: float
    decode_time: float
    peak_memory_gb: float
    drafted: list[int] = field(default_factory=list)   # per draft position
    accepted: list[int] = field(default_factory=list)  # per draft position


def predicted_speedup(drafted: Sequence[int], accepted: Sequence[int], k: int, timings: Timings) -> float | None:
    """The cost model's speedup for drafting k tokens at the measured per-position acceptance
    (`timings` calibrated for the run's kind of sampling)."""
    if not drafted or not drafted[0]:
        return None
    expected = 1 + sum(a / d for a, d in zip(accepted[:k], drafted[:k]) if d)
    return expected / timings.round(k) * timings.round(0)


def timings_report(timings: dict[float, Timings]) -> dict:
    """The calibration behind the predictions: per temperature, whole rounds by draft
    length (k = 0: a plain step), and the multiplication order they ran in."""
    any_t = next(iter(timings.values()))
    return {"weight_first_rows": any_t.weight_first_rows,
            "round_s": {f"{temp:g}": {str(k): t for k, t in ts.rounds.items()} for temp, ts in timings.items()}}


def _aggregate(runs: list[Run]) -> dict[str, Any]:
    tokens = sum(r.tokens - 1 for r in runs)
    decode = sum(r.decode_time for r in runs)
    out: dict[str, Any] = {"tokens_per_s": tokens / decode if decode else 0.0,
                           "ttft_s": statistics.median(r.ttft for r in runs),
                           "peak_memory_gb": max(r.peak_memory_gb for r in runs),
                           "generated_tokens": sum(r.tokens for r in runs)}
    if runs[0].drafted:
        width = max(len(r.drafted) for r in runs)
        drafted = [sum(r.drafted[j] for r in runs if j < len(r.drafted)) for j in range(width)]
        accepted = [sum(r.accepted[j] for r in runs if j < len(r.accepted)) for j in range(width)]
        rounds = drafted[0] if drafted else 0
        out.update(drafted=drafted, accepted=accepted,
                   acceptance=sum(accepted) / sum(drafted) if sum(drafted) else 0.0,
                   acceptance_per_position=[a / d if d else None for a, d in zip(accepted, drafted)],
                   tokens_per_round=(sum(accepted) + rounds) / rounds if rounds else None)
    return out


def summarise(configs: list[Config], temperatures: Sequence[float],
              results: dict[tuple[str, float], list[list[Run]]], timings: dict[float, Timings]) -> list[dict]:
    """One row per (configuration, temperature): medians over repeats of the pooled prompts."""
    rows = []
    for temp in temperatures:
        plain = {}
        for config in configs:
            per_repeat = [_aggregate(runs) for runs in results[(config.label, temp)]]
            row: dict[str, Any] = {"engine": config.engine, "k": "adaptive" if config.adaptive else config.k,
                                   "temperature": temp}
            for key in ("tokens_per_s", "ttft_s", "acceptance", "tokens_per_round"):
                values = [r[key] for r in per_repeat if r.get(key) is not None]
                row[key] = statistics.median(values) if values else None
            row["peak_memory_gb"] = max(r["peak_memory_gb"] for r in per_repeat)
            if per_repeat[0].get("drafted") is not None:
                drafted = [sum(x) for x in zip(*(r["drafted"] for r in per_repeat))]
                accepted = [sum(x) for x in zip(*(r["accepted"] for r in per_repeat))]
                row["acceptance_per_position"] = [a / d if d else None for a, d in zip(accepted, drafted)]
                if not config.adaptive and config.engine == "mlxspec":
                    row["predicted_speedup"] = predicted_speedup(drafted, accepted, config.k, timings[temp])
            if config.k == 0:
                plain[config.engine] = row["tokens_per_s"]
            rows.append(row)
        for row in rows:
            if row["temperature"] == temp:
                base = plain.get("mlxspec")
                row["speedup"] = row["tokens_per_s"] / base if base else None
                ref = plain.get(row["engine"])
                row["speedup_vs_own_plain"] = row["tokens_per_s"] / ref if ref else None
    return rows


def compare(rows: list[dict], temperatures: Sequence[float]) -> list[dict]:
    """Per temperature: the best fixed k of each engine, the adaptive rate, and the
    mlxspec / mlx-lm ratio at equal k."""
    out = []
    for temp in temperatures:
        here = [r for r in rows if r["temperature"] == temp]
        entry: dict[str, Any] = {"temperature": temp}
        for engine in ("mlxspec", "mlx-lm"):
            fixed = [r for r in here if r["engine"] == engine and isinstance(r["k"], int) and r["k"] > 0]
            if fixed:
                best = max(fixed, key=lambda r: r["tokens_per_s"])
                entry[f"{engine}_best"] = {"k": best["k"], "tokens_per_s": best["tokens_per_s"],
                                          "speedup": best["speedup"], "acceptance": best.get("acceptance")}
        adaptive = next((r for r in here if r["k"] == "adaptive"), None)
        if adaptive:
            entry["mlxspec_adaptive"] = {"tokens_per_s": adaptive["tokens_per_s"], "speedup": adaptive["speedup"]}
        theirs = {r["k"]: r for r in here if r["engine"] == "mlx-lm"}
        entry["same_k_ratio"] = {str(r["k"]): r["tokens_per_s"] / theirs[r["k"]]["tokens_per_s"]
                                 for r in here if r["engine"] == "mlxspec" and r["k"] in theirs}
        if "mlx-lm_best" in entry:
            ours = max([entry.get("mlxspec_best", {}).get("tokens_per_s", 0.0),
                        entry.get("mlxspec_adaptive", {}).get("tokens_per_s", 0.0)])
            entry["best_vs_best"] = ours / entry["mlx-lm_best"]["tokens_per_s"]
        out.append(entry)
    return out


def demo_table(totals: dict[str, list[GenerationStats]]) -> list[dict]:
    """One row per mode over all answers; speedup relative to plain decoding."""
    rows = []
    for mode, stats in totals.items():
        tokens = sum(s.generation_tokens for s in stats)
        seconds = sum(s.prompt_time + s.generation_time for s in stats)
        row = {"mode": mode, "time_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
               "peak_memory_gb": max(s.peak_memory_gb for s in stats)}
        if all(isinstance(s, SpeculativeStats) for s in stats):
            drafted = sum(s.drafted for s in stats)
            rounds = sum(s.rounds for s in stats)
            k_counts: dict[int, int] = {}
            for s in stats:
                for k, n in s.k_counts.items():
                    k_counts[k] = k_counts.get(k, 0) + n
            row.update(acceptance=sum(s.accepted for s in stats) / drafted if drafted else 0.0,
                       tokens_per_round=tokens / rounds if rounds else 0.0,
                       draft_lengths={str(k): n for k, n in sorted(k_counts.items())})
        rows.append(row)
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    return rows
