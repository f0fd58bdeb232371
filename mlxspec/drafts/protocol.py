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


class BatchDrafter(Protocol):
    """What a batch needs from a draft: the same calls for every row at once. Rows are
    numbered in the batch's order; `add` appends one (its prompt, and the target's hidden
    states over it when `feature_layers` is not None), `keep` keeps the rows listed, in
    that order; `propose` gives each row b up to `ks[b]` tokens (0: none), drawn by its
    own `picks[b]` (`greedy` at `add`: whether the row decodes greedily)."""

    mode: str
    feature_layers: tuple[int, ...] | None

    def add(self, prompt: list[int], hidden: mx.array | None, greedy: bool = True) -> None: ...

    def keep(self, rows: list[int]) -> None: ...

    def outlook(self, b: int, last: int) -> Outlook: ...

    def extend(self, b: int, tokens: list[int], hidden: mx.array | None) -> None: ...

    def propose(self, lasts: list[int], ks: list[int], picks: list[Pick]) -> list[Proposal]: ...

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array | None) -> None: ...


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


def pick_rows(logits: mx.array, picks: list[Pick], ks: list[int], i: int,
              support: mx.array | None) -> list[tuple[mx.array, mx.array | None]]:
    """Draft position i of every row from logits [B, S]: drawn by the row's own pick while
    it wants that many tokens, else a placeholder (argmax, no random draw: a row's draws
    stay those it makes alone)."""
    return [pick(logits[b : b + 1], support, True) if i < k else (mx.argmax(logits[b : b + 1], axis=-1)[:, None], None)
            for b, (pick, k) in enumerate(zip(picks, ks))]


def row_proposals(drafted: mx.array, logprobs: list[list[mx.array | None]], ks: list[int],
                  support: mx.array | None) -> list[Proposal]:
    """Row b's proposal: its first ks[b] drafted tokens [1, ks[b]] and their distributions."""
    return [Proposal(drafted[b : b + 1, :kb], None if kb == 0 or logprobs[0][b] is None else
                     mx.stack([lp[b] for lp in logprobs[:kb]], axis=1), support) for b, kb in enumerate(ks)]


def point_mass(tokens: list[int]) -> Proposal:
    """A proposal of fixed tokens: each one's q puts all its mass on it (over `support`, the
    proposed tokens themselves: entry j of position i is 0 where j == i, else -inf)."""
    k = len(tokens)
    eye = mx.eye(k, dtype=mx.bool_) if k else mx.zeros((0, 0), dtype=mx.bool_)
    logprobs = mx.where(eye, 0.0, -mx.inf)[None]
    return Proposal(mx.array([tokens], dtype=mx.int32).reshape(1, k), logprobs, mx.array(tokens, dtype=mx.int32))
