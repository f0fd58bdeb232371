"""The drafter protocol: what the speculative loop asks of whoever proposes tokens (a draft
model, a feature draft, ...). Every kind keeps its own state in step with the verified
text and answers through the same three calls:

- `extend(tokens, features)`: tokens the target has verified (and, for feature drafts,
  the target's hidden states at the positions it just processed: the final ones, followed
  along the last axis by the outputs of the blocks the drafter names in `feature_layers`);
- `propose(last, k, pick)`: k tokens following `last`, with their distributions (a
  `Proposal`; a draft whose head scores a subset of the vocabulary keeps its
  distributions over that subset: sampling them costs a fraction of the full vocabulary);
- `settle(accepted, drafted, features)`: after verification, keep what the target
  accepted (the target's hidden states over `last` and the drafts come along);
- `outlook(last)`: before a round, what the next proposal would be (`Outlook`): which
  acceptance estimate it falls under and how many tokens it can offer. A drafter whose
  outlook changes from token to token (`varies`, e.g. prompt lookup) is asked again
  after every plain step; a proposal may hold fewer than k tokens, even none.

The loop's invariant (see `mlxspec.engine.speculative`): `last` is the newest token, fed to neither
model; everything before it is verified. A drafter holds what it has not consumed yet.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import mlx.core as mx

# pick(logits, support=None, target_ids=False) -> (token [B, 1], processed log-probabilities or None):
# `target_ids` says the logits score target token ids (`support` of them, or all).
Pick = Callable[..., tuple[mx.array, mx.array | None]]


class Proposal(NamedTuple):
    """k drafted tokens and the distributions they were drawn from."""

    tokens: mx.array  # [B, k] token ids
    logprobs: mx.array | None  # [B, k, S] processed log-probabilities (None when greedy)
    support: mx.array | None  # [S] the token id of each entry of `logprobs`; None: the whole vocabulary


class Outlook(NamedTuple):
    """What a drafter's next proposal would be: `key` names the acceptance estimate it
    falls under (one per kind of proposal), `most` is how many tokens it can offer, and
    `prior` is the acceptance rate to assume for a kind not seen yet."""

    key: str
    most: int
    prior: float = 0.5


MODEL_OUTLOOK = Outlook("model", 1 << 30)  # a draft model always proposes, alike every round


class Drafter(Protocol):
    """What the speculative loop needs from a draft."""

    mode: str  # what kind of drafter, as stats and `--json` report it
    feature_layers: tuple[int, ...] | None  # None: reads no hidden states (see `extend`)
    varies: bool

    def outlook(self, last: int) -> Outlook: ...

    def extend(self, tokens: list[int], features: mx.array | None) -> None: ...

    def propose(self, last: int, k: int, pick: Pick) -> Proposal: ...

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None) -> None: ...


def draw_proposal(step: Callable[[mx.array], mx.array], first: mx.array, k: int, pick: Pick,
                  support: mx.array | None) -> Proposal:
    """Draw k tokens: `first` are the logits for the first one (over `support`), `step(token)`
    the next's."""
    logits, tokens, logprobs = first, [], []
    for i in range(k):
        if i:
            logits = step(tokens[-1])
        token, lp = pick(logits, support, True)
        if support is not None:
            token = support[token]
        mx.async_eval(token)  # compute this step while the next one is being built
        tokens.append(token)
        logprobs.append(lp)
    lps = None if logprobs[0] is None else mx.stack(logprobs, axis=1)
    return Proposal(mx.concatenate(tokens, axis=1), lps, support)
