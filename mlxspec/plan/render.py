"""A plan as people read it (a table, the verdict and the projection) and as programs read it
(`as_dict`: every number, bytes as integers)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .footprint import Footprint, prefill_chunk
from .projection import Projection
from .verdict import Plan

GB = 1e9


def _gb(n: float) -> str:
    return f"{n / GB:8.3f} GB"


def _footprint_rows(role: str, fp: Footprint) -> list[tuple[str, str]]:
    return [(f"{role} weights as stored", _gb(fp.weights_stored)),
            (f"{role} weights as loaded", _gb(fp.weights_loaded)),
            (f"{role} KV cache per token", f"{fp.kv_per_token / 1e6:8.4f} MB"),
            (f"{role} KV cache", _gb(fp.kv_cache))]


def table(plan: Plan, projection: Projection | None, lookup: bool = False) -> str:
    """The plan as an aligned table, the verdict and (on a chip) the projection; `lookup`: the
    draft is a kind made by name (its acceptance is not assumed)."""
    r = plan.request
    kv = f"{r.kv_bits}-bit (groups of {r.kv_group_size})" if r.kv_bits else "float"
    rows = [("context", f"{plan.tokens} tokens x {r.batch} row{'s' if r.batch > 1 else ''}"),
            ("weights", "dequantized to float32 at load" if r.dequantize else "as stored"),
            ("KV cache", kv)]
    rows += _footprint_rows("target", plan.target_fp)
    if plan.draft_fp is not None:
        rows += _footprint_rows("draft", plan.draft_fp)
    rows += [(f"activations (prefill chunk {min(prefill_chunk(plan.target, r), plan.tokens)})", _gb(plan.activations)),
             ("peak while loading", _gb(plan.load_peak)),
             ("total (the larger peak)", _gb(plan.total)),
             (f"limit: {plan.device.name}", _gb(plan.device.limit) + f"  ({plan.device.source})")]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    margin = plan.device.limit - plan.total
    lines.append(f"verdict: {'fits' if plan.fits else 'does not fit'} "
                 f"({abs(margin) / GB:.2f} GB {'to spare' if plan.fits else 'over'})")
    lines += [f"  try: {tip}" for tip in plan.advice]
    lines.append(projection_line(projection, lookup))
    return "\n".join(lines)


def projection_line(projection: Projection | None, drafting: bool = False) -> str:
    if projection is None:
        return "projection: none (this device is not an Apple chip of the table; name one with --device)"
    line = f"projection at {projection.bandwidth:g} GB/s: plain {projection.plain:.1f} tok/s"
    if projection.speculative is None and drafting:
        line += "; speculative: give --acceptance (prompt lookup's depends on how much the text repeats)"
    if projection.speculative is not None and projection.acceptance is not None:
        acc = projection.acceptance
        line += (f"; speculative {projection.speculative:.1f} tok/s (k={projection.k}) "
                 f"at acceptance {acc.rate:.2f}, {acc.source}")
    return line


def as_dict(plan: Plan, projection: Projection | None) -> dict[str, Any]:
    """Every number of the plan (bytes as integers) and the projection."""
    return {
        "target": plan.target.name, "draft": plan.draft.name if plan.draft is not None else None,
        "request": asdict(plan.request), "tokens": plan.tokens,
        "target_footprint": asdict(plan.target_fp),
        "draft_footprint": asdict(plan.draft_fp) if plan.draft_fp is not None else None,
        "activations": plan.activations, "load_peak": plan.load_peak, "total": plan.total,
        "device": {"name": plan.device.name, "limit": int(plan.device.limit), "source": plan.device.source,
                   "chip": plan.device.chip.name if plan.device.chip else None},
        "fits": plan.fits, "advice": plan.advice,
        "projection": None if projection is None else {
            "bandwidth_gbs": projection.bandwidth, "plain_tps": projection.plain,
            "speculative_tps": projection.speculative, "k": projection.k,
            "acceptance": None if projection.acceptance is None else asdict(projection.acceptance)},
    }
