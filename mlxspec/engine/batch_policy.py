"""How many tokens to draft in a batch step. One length k for the whole step (each row may
offer fewer: its budget, its drafter's outlook, speculation switched off for it), chosen
for the most expected tokens per second over all rows.

What a step costs depends on the batch size: a verification pass over k + 1 tokens per row
costs little more than one token per row when the batch is small (the weights are read
once either way) and nearly k + 1 times as much once the rows fill the machine. So the
step times are measured as the batch runs, per (rows, k), and an unmeasured one is
estimated from the nearest measured k at that size, scaled as the single-request
calibration scales (or from the calibration alone at a size never run yet).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Callable, Sequence

from .policy import MARGIN, AcceptanceEstimate, Timings, expected_tokens

RECENT = 15  # step times kept per (rows, k): their median is the estimate (robust to a slow step)
EXPLORE = 0.01  # the share of decoding time that probes (k = 1 steps while drafting does not pay) may cost


class BatchCost:
    """The batch's draft length from measured step times and the rows' acceptance estimates."""

    def __init__(self, timings: Timings, k_max: int, margin: float = MARGIN) -> None:
        self.timings, self.k_max, self.margin = timings, k_max, margin
        self.samples: dict[tuple[int, int], deque] = {}
        self.times: dict[tuple[int, int], float] = {}  # the median of each one's samples
        self.plain_run = 0

    def step_time(self, rows: int, k: int) -> float:
        """Seconds of a step drafting k tokens with `rows` rows (measured, or estimated)."""
        if (rows, k) in self.times:
            return self.times[rows, k]
        known = [kk for (r, kk) in self.times if r == rows]
        if not known:
            return self.timings.round(k) * self._size_factor(rows)
        near = min(known, key=lambda kk: abs(kk - k))
        return self.times[rows, near] * self._k_factor(rows, k, near)

    def _k_factor(self, rows: int, k: int, near: int) -> float:
        """How a step drafting k compares with one drafting `near`: as measured at the nearest
        other batch size where both ran, else as in the single-request calibration."""
        sizes = [r for (r, kk) in self.times if kk == k and (r, near) in self.times]
        if not sizes:
            return self.timings.round(k) / self.timings.round(near)
        other = min(sizes, key=lambda r: abs(r - rows))
        return self.times[other, k] / self.times[other, near]

    def _size_factor(self, rows: int) -> float:
        """How much a plain step at `rows` costs over one at the nearest measured size."""
        sizes = sorted({r for r, k in self.times if k == 0})
        if not sizes:
            return 1.0
        near = min(sizes, key=lambda r: abs(r - rows))
        return self.times[near, 0] / self.timings.round(0) * max(1.0, rows / near) ** 0.5

    def observe(self, rows: int, k: int, seconds: float) -> None:
        """A step ran: keep its time (not the first at a new shape: that one compiles)."""
        self.plain_run = self.plain_run + 1 if k == 0 else 0
        if (rows, k) not in self.samples:
            self.samples[rows, k] = deque(maxlen=RECENT)
            return
        samples = self.samples[rows, k]
        samples.append(seconds)
        self.times[rows, k] = statistics.median(samples)

    def next_k(self, limits: Sequence[int], estimates: Sequence[AcceptanceEstimate | None]) -> int:
        """The step's k: row b drafts min(k, limits[b]) tokens (0: none) with acceptance
        `estimates[b]` (None: not drafting)."""
        top = min(self.k_max, max(limits, default=0))
        if top <= 0 or (len(limits), 0) not in self.times:  # plain steps first: the baseline is measured
            return 0
        rates = [e.per_position(min(top, lim)) if e is not None and lim > 0 else [] for e, lim in
                 zip(estimates, limits)]

        def speed(k: int) -> float:
            tokens = sum(expected_tokens(r, min(k, len(r))) if r else 1.0 for r in rates)
            return tokens / self.step_time(len(limits), k)

        k = max(range(top + 1), key=speed)
        if k and speed(k) > (1 + self.margin) * speed(0):
            return k
        return 1 if self.plain_run >= self._probe_interval(len(limits), speed) else 0

    def _probe_interval(self, rows: int, speed: Callable[[int], float]) -> int:
        """Plain steps between probes: a probe loses what a k = 1 step gives up against plain
        steps (with the margin); probes stay within `EXPLORE` of the decoding time, so a
        draft near paying is probed often and a useless one rarely."""
        plain = self.step_time(rows, 0)
        loss = max(self.step_time(rows, 1) * (1 - speed(1) / speed(0) / (1 + self.margin)), 0.0)
        return max(1, min(512, math.ceil(loss / (EXPLORE * plain))))
