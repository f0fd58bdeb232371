"""A draft model of its own: a small language model with the target's vocabulary (tokens
in, tokens out; the kind mlx-lm also runs)."""

from __future__ import annotations

import mlx.core as mx

from ..models import Model, SubsetHead
from .protocol import MODEL_OUTLOOK, Outlook, Pick, Proposal, draw_proposal


def last_logits(draft: Model, tokens: mx.array, cache: list) -> mx.array:
    """A draft model's logits [1, rows] at the last position of `tokens` fed after `cache`:
    over its head's subset when it has one (rows = `lm_head.token_ids`), else the vocabulary."""
    if isinstance(getattr(draft, "lm_head", None), SubsetHead):
        return draft.lm_head.subset_logits(draft.model(tokens, cache)[:, -1])
    return draft(tokens, cache)[:, -1]


class ModelDrafter:
    """An independent draft LM with the target's vocabulary. Its cache lacks only
    `pending` (verified tokens it has not seen), fed with `last` at the next proposal."""

    mode = "draft model (same vocabulary)"
    feature_layers = None
    varies = False

    def outlook(self, last: int) -> Outlook:
        return MODEL_OUTLOOK

    def __init__(self, draft: Model, k_max: int, chunk: int) -> None:
        self.draft, self.chunk = draft, chunk
        self.cache = draft.make_cache(max_rollback=k_max)
        self.pending: list[int] = []
        head = getattr(draft, "lm_head", None)
        self.support = head.token_ids if isinstance(head, SubsetHead) else None

    def _logits(self, tokens: mx.array) -> mx.array:
        return last_logits(self.draft, tokens, self.cache)

    def extend(self, tokens: list[int], features: mx.array | None = None) -> None:
        self.pending.extend(tokens)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        feed = self.pending + [last]
        chunks = [feed[i : i + self.chunk] for i in range(0, len(feed), self.chunk)]
        for chunk in chunks[:-1]:  # catch up on tokens the draft has not seen, in chunks
            self.draft.model(mx.array([chunk]), self.cache)
        first = self._logits(mx.array([chunks[-1]]))
        self.pending = []
        return draw_proposal(self._logits, first, k, pick, self.support)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None = None) -> None:
        # the cache holds `last` and drafts 1..k-1; keep the accepted ones
        k = len(drafted)
        if accepted < k:
            for c in self.cache:
                c.rollback(k - 1 - accepted)
        else:
            self.pending = [drafted[-1]]
