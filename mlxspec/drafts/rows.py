"""Drafting row by row: a batch drafter (`BatchDrafter`) made of one single-sequence drafter
(`Drafter`) per row, each drafting alone. It is how one sequence is drafted for (a batch of
one row, on the drafter's own rolling cache), and how a batch drafts with a kind whose
drafting shares no pass between rows (another vocabulary, lookup in front of a model)."""

from __future__ import annotations

from typing import Callable

import mlx.core as mx

from .protocol import Drafter, Outlook, Pick, Proposal

MakeDrafter = Callable[[bool], Drafter]  # greedy -> a fresh drafter


class EachRow:
    """One `Drafter` per row, made by `make(greedy)` as rows are added (`first`: the first
    row's, made already). A row asked for no tokens is not asked to propose: its newest token
    joins its text when the round settles."""

    def __init__(self, make: MakeDrafter | None, first: Drafter | None = None) -> None:
        if first is None and make is None:
            raise ValueError("EachRow needs a way to make drafters or a first one")
        self.make, self.spare = make, first if first is not None else make(True)
        self.mode, self.feature_layers, self._varies = self.spare.mode, self.spare.feature_layers, self.spare.varies
        self.rows: list[Drafter] = []
        self.waiting: list[int | None] = []  # per row: its newest token when it was asked for none

    @property
    def varies(self) -> bool:
        """Whether the rows' outlooks change from token to token (see `Drafter.outlook`)."""
        return self._varies

    def add(self, prompt: list[int], hidden: mx.array | None, greedy: bool = True) -> None:
        """A new last row that has read `prompt` (the target's hidden states over it alongside)."""
        if self.spare is not None and (greedy or self.make is None):
            row, self.spare = self.spare, None
        else:
            row = self.make(greedy)
        row.extend(list(prompt), hidden)
        self.rows.append(row)
        self.waiting.append(None)

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]
        self.waiting = [self.waiting[r] for r in rows]

    def outlook(self, b: int, last: int) -> Outlook:
        return self.rows[b].outlook(last)

    def extend(self, b: int, tokens: list[int], hidden: mx.array | None) -> None:
        self.rows[b].extend(tokens, hidden)

    def propose(self, lasts: list[int], ks: list[int], picks: list[Pick]) -> list[Proposal]:
        proposals = []
        for b, (row, last, k, pick) in enumerate(zip(self.rows, lasts, ks, picks)):
            self.waiting[b] = None if k else last
            proposals.append(row.propose(last, k, pick) if k else empty_proposal())
        return proposals

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array | None) -> None:
        for b, (row, n, tokens) in enumerate(zip(self.rows, accepted, drafted)):
            mine = None if hidden is None else hidden[b : b + 1]
            if self.waiting[b] is not None:
                row.extend([self.waiting[b]], None if mine is None else mine[:, :1])
            else:
                row.settle(n, tokens, mine)


def empty_proposal() -> Proposal:
    """No tokens (a row that drafts nothing this round)."""
    return Proposal(mx.zeros((1, 0), dtype=mx.int32), None, None)


def one_row(drafter: Drafter) -> EachRow:
    """A drafter already made, as the batch drafter of the one sequence it drafts for."""
    return EachRow(None, drafter)
