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
"""

from __future__ import annotations

from typing import Sequence

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
        self._store: list[tuple[list[int], LayerCaches]] = []

    def __len__(self) -> int:
        return len(self._store)

    def take(self, prompt: Sequence[int]) -> tuple[LayerCaches | None, int]:
        """The cache sharing the longest usable prefix with `prompt`, rolled back to it, and
        how many prompt tokens it holds; (None, 0) when none shares a token."""
        best, best_len = None, 0
        for i, (tokens, cache) in enumerate(self._store):
            keep = min(common_prefix(tokens, prompt), len(prompt) - 1)
            if keep > best_len and len(tokens) - keep <= cache.max_rollback:
                best, best_len = i, keep
        if best is None:
            return None, 0
        tokens, cache = self._store.pop(best)
        cache.rollback(len(tokens) - best_len)
        return cache, best_len

    def put(self, tokens: Sequence[int], cache: LayerCaches) -> None:
        """Keep `cache`, which holds `tokens`, as the most recent entry."""
        if not tokens or self.entries == 0:
            return
        self._store.append((list(tokens), cache))
        del self._store[: max(0, len(self._store) - self.entries)]

    def clear(self) -> None:
        """Forget every entry."""
        self._store.clear()
