"""Drafting for a batch: a proposal per row, each row with its own length (0: none) and its
own draws. A draft model or a feature draft runs once for all rows, over a ragged batch
cache; prompt lookup runs per row (it costs no model pass). Drafts with another
vocabulary (and lookup combined with a model) are not batched: a batch with one of them
decodes without drafting.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from ..drafts import FeatureDraft, NGramDraft
from ..drafts.feature import FeatureDrafter, feature_taps, target_subset_head
from ..drafts.model_draft import ModelDrafter
from ..drafts.ngram import NGramDrafter
from ..drafts.protocol import MODEL_OUTLOOK, Outlook, Pick, Proposal
from ..models import Model, SubsetHead
from ..models.batch_cache import BatchCache
from .decode import prefill


class BatchModelDrafter:
    """A draft model with the target's vocabulary, one row per sequence. Row b's cache lacks
    only `pending[b]` (verified tokens it has not seen), fed with its newest token at the
    next proposal: rows catch up together, right-padded, the padding rolled back."""

    mode = ModelDrafter.mode
    feature_layers = None

    def __init__(self, draft: Model, chunk: int) -> None:
        self.draft, self.chunk = draft, chunk
        self.cache = BatchCache(len(draft.layers), draft.args.sliding_window)
        self.pending: list[list[int]] = []
        head = getattr(draft, "lm_head", None)
        self.support = head.token_ids if isinstance(head, SubsetHead) else None
        self.k = 0

    def add(self, prompt: list[int], hidden: mx.array | None = None) -> None:
        """A new last row: the draft reads its prompt alone, then joins the batch."""
        cache = self.draft.make_cache()
        prefill(self.draft, prompt, cache, self.chunk, None)
        self.cache.add(cache)
        self.pending.append([])

    def keep(self, rows: list[int]) -> None:
        self.cache.keep(rows)
        self.pending = [self.pending[r] for r in rows]

    def outlook(self, b: int, last: int) -> Outlook:
        return MODEL_OUTLOOK

    def extend(self, b: int, tokens: list[int], hidden: mx.array | None = None) -> None:
        self.pending[b].extend(tokens)

    def _logits(self, tokens: mx.array, at: Sequence[int] | None = None) -> mx.array:
        """Logits [B, S] after feeding `tokens` [B, n], read at position at[b] of each row
        (default: the last), over the head's subset when it has one."""
        self.cache.layout.begin(tokens.shape[1])
        hidden = self.draft.model(tokens, self.cache.layers)
        rows = hidden[:, -1] if at is None else hidden[mx.arange(hidden.shape[0]), mx.array(at)]
        return self.draft.lm_head.subset_logits(rows) if self.support is not None else self.draft.head(rows)

    def propose(self, lasts: list[int], ks: list[int], picks: list[Pick]) -> list[Proposal]:
        """Up to max(ks) draft steps for every row; row b keeps its first ks[b] tokens."""
        self.k = k = max(ks)
        feeds = [p + [last] for p, last in zip(self.pending, lasts)]
        width = max(len(f) for f in feeds)
        logits = self._logits(mx.array([f + [0] * (width - len(f)) for f in feeds]), [len(f) - 1 for f in feeds])
        self.cache.layout.rollback([width - len(f) for f in feeds])
        self.pending = [[] for _ in feeds]
        tokens, logprobs = [], []
        for i in range(k):
            if i:
                logits = self._logits(tokens[-1])
            picked = pick_rows(logits, picks, ks, i, self.support)
            token = mx.concatenate([t for t, _ in picked], axis=0)
            tokens.append(token if self.support is None else self.support[token])
            logprobs.append([lp for _, lp in picked])
            mx.async_eval(tokens[-1])
        return proposals(mx.concatenate(tokens, axis=1), logprobs, ks, self.support)

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array | None = None) -> None:
        """Keep each row's accepted drafts: its cache holds the newest token and drafts
        1..k-1 of the last proposal (all rows drafted k; a row kept fewer)."""
        self.cache.layout.rollback([self.k - 1 - n if n < self.k else 0 for n in accepted])
        for b, n in enumerate(accepted):
            if n == self.k:
                self.pending[b] = [drafted[b][-1]]


class BatchFeatureDrafter:
    """A feature draft (EAGLE) for every row: row b consumes pairs (f_t, x_{t+1}) of the
    target's hidden states and tokens; `features[b]` holds one more entry than `tokens[b]`
    (the last waits for the row's newest token). Rows catch up together, right-padded."""

    mode = FeatureDrafter.mode

    def __init__(self, draft: FeatureDraft, target: Model, chunk: int) -> None:
        self.draft, self.chunk = draft, chunk
        self.feature_layers = feature_taps(draft, target)
        self.embed = target.model.embed_tokens
        self.head = target_subset_head(target, draft.token_ids)
        self.cache = BatchCache(len(draft.layers), None)
        self.features: list[list[mx.array]] = []  # per row, pieces [1, n_i, d * (1 + taps)] of its n + 1 features
        self.tokens: list[list[int]] = []
        self.k = 0

    def add(self, prompt: list[int], hidden: mx.array) -> None:
        """A new last row: the draft reads the prompt's pairs alone, then joins the batch."""
        cache = self.draft.make_cache()
        for s in range(0, len(prompt) - 1, self.chunk):
            ids = mx.array([prompt[s + 1 : s + 1 + self.chunk]])
            self.draft(self.draft.fused(hidden[:, s : s + ids.shape[1]]), self.embed(ids), cache)
            mx.eval([c.keys for c in cache])
        self.cache.add(cache)
        self.features.append([hidden[:, -1:]])
        self.tokens.append([])

    def keep(self, rows: list[int]) -> None:
        self.cache.keep(rows)
        self.features = [self.features[r] for r in rows]
        self.tokens = [self.tokens[r] for r in rows]

    def outlook(self, b: int, last: int) -> Outlook:
        return MODEL_OUTLOOK

    def extend(self, b: int, tokens: list[int], hidden: mx.array) -> None:
        self.tokens[b].extend(tokens)
        self.features[b].append(hidden)  # joined once, when the row next drafts

    def _run(self, features: mx.array, tokens: mx.array) -> mx.array:
        self.cache.layout.begin(tokens.shape[1])
        return self.draft(features, self.embed(tokens), self.cache.layers)

    def propose(self, lasts: list[int], ks: list[int], picks: list[Pick]) -> list[Proposal]:
        self.k = k = max(ks)
        feeds = [t + [last] for t, last in zip(self.tokens, lasts)]
        width = max(len(f) for f in feeds)
        rows = [mx.concatenate(f, axis=1) if len(f) > 1 else f[0] for f in self.features]
        features = mx.concatenate([mx.pad(f, [(0, 0), (0, width - f.shape[1]), (0, 0)]) for f in rows])
        pred = self._run(self.draft.fused(features), mx.array([f + [0] * (width - len(f)) for f in feeds]))
        pred = pred[mx.arange(len(feeds)), mx.array([len(f) - 1 for f in feeds])][:, None]
        self.cache.layout.rollback([width - len(f) for f in feeds])
        self.tokens, self.features = [[] for _ in feeds], [[] for _ in feeds]
        tokens, logprobs = [], []
        for i in range(k):
            if i:
                pred = self._run(pred, tokens[-1])
            logits = self.head.subset_logits(pred)[:, -1]
            picked = pick_rows(logits, picks, ks, i, self.head.token_ids)
            tokens.append(self.head.token_ids[mx.concatenate([t for t, _ in picked], axis=0)])
            logprobs.append([lp for _, lp in picked])
            mx.async_eval(tokens[-1])
        return proposals(mx.concatenate(tokens, axis=1), logprobs, ks, self.head.token_ids)

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array) -> None:
        """Positions drafted from predicted features give way to the verified pairs."""
        self.cache.layout.rollback([self.k - 1] * len(accepted))
        for b, n in enumerate(accepted):
            self.extend(b, drafted[b][:n], hidden[b : b + 1, : n + 1])


def pick_rows(logits: mx.array, picks: list[Pick], ks: list[int], i: int,
              support: mx.array | None) -> list[tuple[mx.array, mx.array | None]]:
    """Draft position i of every row from logits [B, S]: drawn by the row's own pick while
    it wants that many tokens, else a placeholder (argmax, no random draw: a row's draws
    stay those it makes alone)."""
    return [pick(logits[b : b + 1], support, True) if i < k else (mx.argmax(logits[b : b + 1], axis=-1)[:, None], None)
            for b, (pick, k) in enumerate(zip(picks, ks))]


def proposals(drafted: mx.array, logprobs: list[list[mx.array | None]], ks: list[int],
              support: mx.array | None) -> list[Proposal]:
    """Row b's proposal: its first ks[b] drafted tokens [1, ks[b]] and their distributions."""
    return [Proposal(drafted[b : b + 1, :kb], None if kb == 0 or logprobs[0][b] is None else
                     mx.stack([lp[b] for lp in logprobs[:kb]], axis=1), support) for b, kb in enumerate(ks)]


class BatchLookupDrafter:
    """Prompt lookup, one index per row."""

    mode = NGramDrafter.mode
    feature_layers = None

    def __init__(self, draft: NGramDraft) -> None:
        self.draft = draft
        self.rows: list[NGramDrafter] = []

    def add(self, prompt: list[int], hidden: mx.array | None = None) -> None:
        row = NGramDrafter(self.draft)
        row.extend(prompt)
        self.rows.append(row)

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]

    def outlook(self, b: int, last: int) -> Outlook:
        return self.rows[b].outlook(last)

    def extend(self, b: int, tokens: list[int], hidden: mx.array | None = None) -> None:
        self.rows[b].extend(tokens)

    def propose(self, lasts: list[int], ks: list[int], picks: list[Pick]) -> list[Proposal]:
        return [row.propose(last, k, pick) for row, last, k, pick in zip(self.rows, lasts, ks, picks)]

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array | None = None) -> None:
        for row, n, tokens in zip(self.rows, accepted, drafted):
            row.settle(n, tokens)


BatchDrafter = BatchModelDrafter | BatchFeatureDrafter | BatchLookupDrafter


def batches(draft: object, target: Model) -> bool:
    """Whether this kind of draft drafts inside a batch (prompt lookup, a feature draft, a
    draft model with the target's vocabulary)."""
    return isinstance(draft, (NGramDraft, FeatureDraft)) or (
        isinstance(draft, Model) and draft.args.vocab_size == target.args.vocab_size)


def batch_drafter(draft: object, target: Model, chunk: int) -> BatchDrafter | None:
    """The batched drafter for a session's draft; None for kinds that do not batch."""
    if not batches(draft, target):
        return None
    if isinstance(draft, NGramDraft):
        return BatchLookupDrafter(draft)
    if isinstance(draft, FeatureDraft):
        return BatchFeatureDrafter(draft, target, chunk)
    return BatchModelDrafter(draft, chunk)
