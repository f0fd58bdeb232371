"""One speculative round (Leviathan et al. 2023; Chen et al. 2023), the same for one sequence
and for the rows of a batch: the drafter proposes up to ks[b] tokens for each row b, the
target scores every row's newest token and proposal in one pass (a shorter proposal is
padded after its tokens, so causal attention keeps the padding out of its logits), each row
is verified by exact rejection sampling with its own settings and random stream, and the
target's cache and the drafter roll back what each row did not keep. Everything stays in MLX
arrays until one read-back per row at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import mlx.core as mx

from ..drafts import BatchDrafter, Proposal
from ..models import LayerCaches, Model
from .decode import Taps, forward
from .sampler import Sampler


class RoundRow(Protocol):
    """What a round needs of each row: its newest token, its draws, and how it picks a draft."""

    last: int
    sampler: Sampler

    def pick(self, logits: mx.array, support: mx.array | None = None,
             target_ids: bool = False) -> tuple[mx.array, mx.array | None]: ...


class PassCache(Protocol):
    """The target's cache as a round uses it: the layers' caches, and rolling rows back."""

    layers: list

    def rollback(self, counts: list[int]) -> None: ...


class SequenceCache:
    """One sequence's layer caches as a `PassCache`."""

    def __init__(self, layers: LayerCaches) -> None:
        self.layers = layers

    def rollback(self, counts: list[int]) -> None:
        self.layers.rollback(counts[0])


@dataclass
class Round:
    """What a round did, per row: tokens proposed, accepted, the proposal's tokens and the
    token drawn after the accepted ones; the target's logits [B, width + 1, vocab]; the
    seconds spent until the drafts were ready and after; the hidden states it tapped."""

    lengths: list[int]
    accepted: list[int]
    drafted: list[list[int]]
    nexts: list[int]
    raw: mx.array
    draft_time: float
    target_time: float
    hidden: mx.array | None = None  # the hidden states a feature draft reads [B, width + 1, D]

    def kept(self, b: int) -> list[int]:
        """Row b's new tokens: its accepted drafts, then the token drawn after them."""
        return self.drafted[b][: self.accepted[b]] + [self.nexts[b]]


def _fed(last: int, proposal: Proposal, width: int) -> mx.array:
    """A row of the verification pass: its newest token, its drafts, padding up to `width`."""
    pieces = [mx.array([[last]], dtype=mx.int32), proposal.tokens.astype(mx.int32)]
    if proposal.tokens.shape[1] < width:
        pieces.append(mx.zeros((1, width - proposal.tokens.shape[1]), mx.int32))
    return mx.concatenate(pieces, axis=1)


def _verified(row: RoundRow, raw: mx.array, proposal: Proposal, n: int) -> mx.array:
    """[accepted, next token, drafts...] of one row, from its logits [1, >= n + 1, vocab]."""
    if n:
        count, nxt = row.sampler.verify(raw[:, : n + 1], proposal)
    else:
        count, nxt = mx.zeros((1,), mx.int32), row.sampler.draw(raw[:, 0])
    return mx.concatenate([count.astype(mx.int32), nxt.astype(mx.int32), proposal.tokens[0].astype(mx.int32)])


def speculative_round(target: Model, cache: PassCache, drafter: BatchDrafter, rows: Sequence[RoundRow],
                      ks: list[int], taps: Taps) -> Round:
    """Draft up to ks[b] tokens for each row (a drafter may offer fewer, even none), verify
    every row in one target pass, and keep what each row accepted (see the module)."""
    start = time.perf_counter()
    for row in rows:
        row.sampler.start_round()
    proposals = drafter.propose([row.last for row in rows], ks, [row.pick for row in rows])
    lengths = [p.tokens.shape[1] for p in proposals]
    width = max(lengths)
    fed = [_fed(row.last, p, width) for row, p in zip(rows, proposals)]
    raw, hidden = forward(target, fed[0] if len(fed) == 1 else mx.concatenate(fed, axis=0), cache.layers, taps)
    results = [_verified(row, raw if len(rows) == 1 else raw[b : b + 1], p, n)
               for b, (row, p, n) in enumerate(zip(rows, proposals, lengths))]
    mx.async_eval(results)
    mx.eval([p.tokens for p in proposals])  # only to split the time between draft and target
    mid = time.perf_counter()
    values = [r.tolist() for r in results]
    accepted = [v[0] for v in values]
    cache.rollback([width - a for a in accepted])
    drafted = [v[2:] for v in values]
    drafter.settle(accepted, drafted, hidden)
    return Round(lengths, accepted, drafted, [v[1] for v in values], raw, mid - start, time.perf_counter() - mid,
                 hidden)
