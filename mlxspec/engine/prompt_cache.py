"""The prompt cache: the target's key/value caches of recent requests, kept so that a new
request whose tokens begin like an earlier one's (the next turn of a conversation, a
shared system prompt) prefills only what is new.

An entry is the tokens a cache holds. A request takes the entry sharing the longest
prefix with its prompt, rolled back to that prefix (always one token short of the whole
prompt: the last prompt token must be fed to get the first new token's logits). Taken
entries leave the store (the generation writes into them) and come back when it ends.

With a sliding window the cache is a rolling buffer that remembers only the last
`window + max_rollback` positions: it can be rolled back at most `max_rollback` tokens.
Past the window a conversation is reused only while the new prompt extends the cached
tokens (the usual case: the next turn appends to the history); a prompt that differs
earlier than that is prefilled from the start.

A feature draft reads the target's hidden states at every position, so an entry may also
keep those (`FeatureLog`): a request drafting with one takes only entries that have them,
and its draft reads the reused prefix's pairs from them (a pass of the small draft, not of
the target).
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from ..models import LayerCaches

DEFAULT_ENTRIES = 4


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCache:
    """Up to `entries` caches of earlier requests, the least recently used dropped first."""

    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        self.entries = entries
        self._store: list[tuple[list[int], LayerCaches, mx.array | None]] = []

    def __len__(self) -> int:
        return len(self._store)

    def take(self, prompt: Sequence[int], features: bool = False) -> tuple[LayerCaches | None, int, mx.array | None]:
        """The cache sharing the longest usable prefix with `prompt`, rolled back to it, how
        many prompt tokens it holds and (with `features`: only entries that kept them) the
        target's hidden states over those; (None, 0, None) when none shares a token."""
        best, best_len = None, 0
        for i, (tokens, cache, kept) in enumerate(self._store):
            keep = min(common_prefix(tokens, prompt), len(prompt) - 1)
            if keep > best_len and len(tokens) - keep <= cache.max_rollback and (kept is not None or not features):
                best, best_len = i, keep
        if best is None:
            return None, 0, None
        tokens, cache, kept = self._store.pop(best)
        cache.rollback(len(tokens) - best_len)
        return cache, best_len, kept[:, :best_len] if features else None

    def put(self, tokens: Sequence[int], cache: LayerCaches, features: mx.array | None = None) -> None:
        """Keep `cache`, which holds `tokens` (and the target's hidden states over them,
        `features` [1, len(tokens), D], when a feature draft read them), as the most recent entry."""
        if not tokens or self.entries == 0:
            return
        self._store.append((list(tokens), cache, features))
        del self._store[: max(0, len(self._store) - self.entries)]

    def clear(self) -> None:
        """Forget every entry."""
        self._store.clear()


class FeatureLog:
    """The target's hidden states at the positions a generation's cache holds, in order, as
    a feature draft was handed them (`prior`: those of a reused prefix)."""

    def __init__(self, prior: mx.array | None = None) -> None:
        self.pieces: list[mx.array] = [] if prior is None or prior.shape[1] == 0 else [prior]

    def add(self, hidden: mx.array) -> None:
        """Hidden states [1, n, D] of the next n positions."""
        self.pieces.append(hidden)

    def __len__(self) -> int:
        return sum(piece.shape[1] for piece in self.pieces)

    def held(self, n: int) -> mx.array | None:
        """The first n positions' [1, n, D] (None when fewer were logged)."""
        if not self.pieces:
            return None
        joined = mx.concatenate(self.pieces, axis=1) if len(self.pieces) > 1 else self.pieces[0]
        return joined[:, :n] if joined.shape[1] >= n else None
