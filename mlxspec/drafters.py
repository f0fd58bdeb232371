"""Who proposes the tokens: a small language model of its own, or a feature draft that
reads the target's hidden states. Both keep their own cache in step with the verified
text and answer the speculative loop through the same three calls:

- `extend(tokens, features)`: tokens the target has verified (and, for feature drafts,
  the target's hidden states at the positions it just processed);
- `propose(last, k, pick)`: k tokens following `last`, with their distributions (a
  `Proposal`; a draft whose head scores a subset of the vocabulary keeps its
  distributions over that subset: sampling them costs a fraction of the full vocabulary);
- `settle(accepted, drafted, features)`: after verification, keep what the target
  accepted (the target's hidden states over `last` and the drafts come along).

The loop's invariant (see `speculative.py`): `last` is the newest token, fed to neither
model; everything before it is verified. A drafter holds what it has not consumed yet.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import mlx.core as mx

from .feature_draft import FeatureDraft, target_subset_head
from .model import Model, SubsetHead

Pick = Callable[[mx.array], tuple[mx.array, mx.array | None]]


class Proposal(NamedTuple):
    """k drafted tokens and the distributions they were drawn from."""

    tokens: mx.array  # [B, k] token ids
    logprobs: mx.array | None  # [B, k, S] processed log-probabilities (None when greedy)
    support: mx.array | None  # [S] the token id of each entry of `logprobs`; None: the whole vocabulary


class Drafter(Protocol):
    """What the speculative loop needs from a draft."""

    needs_features: bool

    def extend(self, tokens: list[int], features: mx.array | None) -> None: ...

    def propose(self, last: int, k: int, pick: Pick) -> Proposal: ...

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None) -> None: ...


def _propose(step: Callable[[mx.array], mx.array], first: mx.array, k: int, pick: Pick,
             support: mx.array | None) -> Proposal:
    """Draw k tokens: `first` are the logits for the first one (over `support`), `step(token)`
    the next's."""
    logits, tokens, logprobs = first, [], []
    for i in range(k):
        if i:
            logits = step(tokens[-1])
        token, lp = pick(logits)
        if support is not None:
            token = support[token]
        mx.async_eval(token)  # compute this step while the next one is being built
        tokens.append(token)
        logprobs.append(lp)
    lps = None if logprobs[0] is None else mx.stack(logprobs, axis=1)
    return Proposal(mx.concatenate(tokens, axis=1), lps, support)


class ModelDrafter:
    """An independent draft LM with the target's vocabulary. Its cache lacks only
    `pending` (verified tokens it has not seen), fed with `last` at the next proposal."""

    needs_features = False

    def __init__(self, draft: Model, k_max: int, chunk: int) -> None:
        self.draft, self.chunk = draft, chunk
        self.cache = draft.make_cache(max_rollback=k_max)
        self.pending: list[int] = []
        head = getattr(draft, "lm_head", None)
        self.support = head.token_ids if isinstance(head, SubsetHead) else None

    def _logits(self, tokens: mx.array) -> mx.array:
        """The draft's logits at the last position (over its head's subset, if it has one)."""
        if self.support is None:
            return self.draft(tokens, self.cache)[:, -1]
        return self.draft.lm_head.subset_logits(self.draft.model(tokens, self.cache)[:, -1])

    def extend(self, tokens: list[int], features: mx.array | None = None) -> None:
        self.pending.extend(tokens)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        feed = self.pending + [last]
        chunks = [feed[i : i + self.chunk] for i in range(0, len(feed), self.chunk)]
        for chunk in chunks[:-1]:  # catch up on tokens the draft has not seen, in chunks
            self.draft.model(mx.array([chunk]), self.cache)
        first = self._logits(mx.array([chunks[-1]]))
        self.pending = []
        return _propose(self._logits, first, k, pick, self.support)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None = None) -> None:
        # the cache holds `last` and drafts 1..k-1; keep the accepted ones
        k = len(drafted)
        if accepted < k:
            for c in self.cache:
                c.rollback(k - 1 - accepted)
        else:
            self.pending = [drafted[-1]]


class FeatureDrafter:
    """A `FeatureDraft` on top of the target. It consumes pairs (f_t, x_{t+1}): `features`
    holds one more entry than `tokens`, the last feature waiting for `last` as its pair."""

    needs_features = True

    def __init__(self, draft: FeatureDraft, target: Model, chunk: int) -> None:
        self.draft, self.target, self.chunk = draft, target, chunk
        self.embed = target.model.embed_tokens
        self.head = target_subset_head(target, draft.token_ids)
        self.cache = draft.make_cache()
        self.features: list[mx.array] = []
        self.tokens: list[int] = []
        self.started = False

    def extend(self, tokens: list[int], features: mx.array | None) -> None:
        if not self.started:  # the prompt: x_0 is nobody's pair; a one-token prompt gets a zero feature
            self.started, tokens = True, tokens[1:]
            if features is None or features.shape[1] == 0:
                dtype = self.embed(mx.array([[0]])).dtype
                features = mx.zeros((1, 1, self.target.args.hidden_size), dtype)
        elif features is None:
            raise ValueError("a feature draft needs the target's hidden states")
        self.tokens.extend(tokens)
        self.features.append(features)

    def _run(self, features: mx.array, token_ids: mx.array) -> mx.array:
        return self.draft(features, self.embed(token_ids), self.cache)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        features = mx.concatenate(self.features, axis=1)
        tokens = self.tokens + [last]
        for s in range(0, len(tokens) - self.chunk, self.chunk):  # catch up in chunks
            self._run(features[:, s : s + self.chunk], mx.array([tokens[s : s + self.chunk]]))
        s = (len(tokens) - 1) // self.chunk * self.chunk
        pred = self._run(features[:, s:], mx.array([tokens[s:]]))[:, -1:]
        self.features, self.tokens = [], []

        def step(token: mx.array) -> mx.array:
            nonlocal pred
            pred = self._run(pred, token)
            return self.head.subset_logits(pred)[:, -1]

        return _propose(step, self.head.subset_logits(pred)[:, -1], k, pick, self.head.token_ids)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None) -> None:
        # positions drafted from predicted features give way to the verified pairs
        for c in self.cache:
            c.rollback(len(drafted) - 1)
        self.extend(drafted[:accepted], features[:, : accepted + 1])


def make_drafter(draft: Model | FeatureDraft, target: Model, k_max: int, chunk: int) -> Drafter:
    """The drafter for this kind of draft."""
    if isinstance(draft, FeatureDraft):
        return FeatureDrafter(draft, target, chunk)
    return ModelDrafter(draft, k_max, chunk)
