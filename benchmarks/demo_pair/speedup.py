"""What a trained draft should buy: whole speculative rounds timed on this machine, and the
speedup over plain decoding they predict with the draft's measured acceptance."""

from __future__ import annotations

from mlxspec.drafts import Draft
from mlxspec.engine import SamplingParams
from mlxspec.engine.calibrate import measure
from mlxspec.models import Model


def cost_and_speedups(target: Model, draft: Draft, acc: list[float]) -> tuple[dict, dict[int, float]]:
    """Time greedy rounds drafting k = 0..8 tokens (k = 0: one plain step), as training.json's
    "cost"; and the predicted speedup for k = 1..len(acc), where acc[j] is P(first j + 1
    drafts accepted): E[tokens per round] / round time, over a plain step's time."""
    timings = measure(target, draft, 8, SamplingParams(), rows=0)
    cost = {"round_s": {str(k): t for k, t in sorted(timings.rounds.items())},
            "ratio": timings.round(1) / timings.round(0)}
    speedups = {k: (1 + sum(acc[:k])) / timings.round(k) * timings.round(0) for k in range(1, len(acc) + 1)}
    return cost, speedups
