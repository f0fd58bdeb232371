"""A draft model of its own: a small language model with the target's vocabulary (tokens
in, tokens out; the kind mlx-lm also runs), for one sequence or the rows of a batch."""

from __future__ import annotations

import warnings
from typing import Sequence

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import InputError
from ..models import KVQuantization, Model, SubsetHead, fingerprint, is_model, kv_keyword, layer_caches
from ..models.batch_cache import BatchCache
from .protocol import MODEL_OUTLOOK, Outlook, Pick, Proposal, draw_proposal, pick_rows, row_proposals


def parameter_count(model: Model) -> int:
    """Number of weights as stored (quantized weights count packed elements)."""
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def warn_if_not_smaller(model: Model, target: Model) -> None:
    """Speculation with a draft model as large as its target only slows things down."""
    if is_model(model) and parameter_count(model) >= parameter_count(target):
        warnings.warn(f"the draft ({parameter_count(model) / 1e6:.0f}M parameters) is not smaller than the target "
                      f"({parameter_count(target) / 1e6:.0f}M); speculation will not pay off", stacklevel=4)


class ModelDraft:
    """The draft kind of a `Model` with the target's vocabulary (what `load_draft` returns
    for one as the model itself; a session wraps it in this)."""

    reads_features = False

    def __init__(self, model: Model) -> None:
        self.model = model

    @property
    def batches(self) -> bool:
        """A model of the port drafts for every row in one pass; one mlx-lm runs, row by row."""
        return self.model.batches

    @property
    def args(self):
        """The draft model's configuration."""
        return self.model.args

    def drafter(self, target: Model, k_max: int, chunk: int, greedy: bool,
                kv: KVQuantization | None = None) -> ModelDrafter:
        return ModelDrafter(self.model, k_max, chunk, kv)

    def batch_drafter(self, target: Model, chunk: int, kv: KVQuantization | None = None) -> BatchModelDrafter:
        return BatchModelDrafter(self.model, chunk, kv)

    def check(self, target: Model, num_draft_tokens: int) -> None:
        if self.model.args.vocab_size != target.args.vocab_size:
            raise InputError(
                f"draft vocabulary size {self.model.args.vocab_size} differs from the target's "
                f"{target.args.vocab_size}; to draft across vocabularies, load it with "
                "mlxspec.load_draft(path, target, tokenizer)")
        warn_if_not_smaller(self.model, target)

    def describe(self) -> str:
        a = self.model.args
        head = f", head over {a.head_vocab_size} tokens" if a.head_vocab_size else ""
        return f"draft model, {a.num_hidden_layers} blocks{head}"

    def vocabulary(self, target: Model) -> int:
        return self.model.args.vocab_size

    def fingerprint(self) -> dict:
        return fingerprint(self.model)

    @property
    def timed(self) -> ModelDraft:
        return self

    @property
    def token_model(self) -> Model:
        return self.model


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

    def __init__(self, draft: Model, k_max: int, chunk: int, kv: KVQuantization | None = None) -> None:
        self.draft, self.chunk = draft, chunk
        self.cache = layer_caches(draft.make_cache(max_rollback=k_max, **kv_keyword(kv)))
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
            self.cache.rollback(k - 1 - accepted)
        else:
            self.pending = [drafted[-1]]


class BatchModelDrafter:
    """A draft model with the target's vocabulary, one row per sequence. Row b's cache lacks
    only `pending[b]` (verified tokens it has not seen), fed with its newest token at the
    next proposal: rows catch up together, right-padded, the padding rolled back."""

    mode = ModelDrafter.mode
    feature_layers = None

    def __init__(self, draft: Model, chunk: int, kv: KVQuantization | None = None) -> None:
        self.draft, self.chunk, self.kv = draft, chunk, kv
        self.cache = BatchCache(len(draft.layers), draft.args.sliding_window)
        self.pending: list[list[int]] = []
        head = getattr(draft, "lm_head", None)
        self.support = head.token_ids if isinstance(head, SubsetHead) else None
        self.k = 0

    def add(self, prompt: list[int], hidden: mx.array | None = None, greedy: bool = True) -> None:
        """A new last row: the draft reads its prompt alone, then joins the batch."""
        cache = self.draft.make_cache(**kv_keyword(self.kv))
        for s in range(0, len(prompt), self.chunk):
            hidden = self.draft.model(mx.array([prompt[s : s + self.chunk]]), cache)
            mx.eval(hidden, [c.keys for c in cache if c.keys is not None])
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
        return row_proposals(mx.concatenate(tokens, axis=1), logprobs, ks, self.support)

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array | None = None) -> None:
        """Keep each row's accepted drafts: its cache holds the newest token and drafts
        1..k-1 of the last proposal (all rows drafted k; a row kept fewer)."""
        self.cache.layout.rollback([self.k - 1 - n if n < self.k else 0 for n in accepted])
        for b, n in enumerate(accepted):
            if n == self.k:
                self.pending[b] = [drafted[b][-1]]
