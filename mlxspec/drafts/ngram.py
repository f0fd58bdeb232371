"""Prompt lookup (n-gram drafting): no draft model. The text so far (prompt and answer)
is its own draft: find the most recent earlier occurrence of the last n tokens (n from
`max_ngram` down to `min_ngram`) and propose what followed it. Its q is a point mass on
the proposed token, so rejection sampling stays exact at any temperature: token x is
accepted with probability p(x), and a rejection draws from p with x taken out.

How long the match runs back (beyond n) says how likely the copy is to go on, so each
proposal's `Outlook` names its match length: the policy learns acceptance per length and
drafts only where a match has paid off before."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from ..errors import InputError
from ..models import KVQuantization, Model
from .kind import DraftSettings, register
from .protocol import Outlook, Pick, Proposal, point_mass

MATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)  # match lengths with an acceptance estimate of their own
MAX_CONTINUATION = 64  # tokens of a match's continuation offered at most


@dataclass(frozen=True)
class NGramDraft:
    """Prompt lookup's settings: the longest and shortest n-gram it looks up."""

    max_ngram: int = 3
    min_ngram: int = 1

    def __post_init__(self) -> None:
        for name in ("max_ngram", "min_ngram"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 64:
                raise InputError(f"prompt lookup: {name} must be an integer in 1..64, got {value!r}")
        if self.min_ngram > self.max_ngram:
            raise InputError(f"prompt lookup: min_ngram {self.min_ngram} > max_ngram {self.max_ngram}")

    # the draft kind (`mlxspec.drafts.kind.DraftKind`); in a batch each row looks up alone
    # (`drafts.rows.EachRow`): no model pass to share
    batches = False
    reads_features = False
    timed = property(lambda self: self)
    token_model = None

    def describe(self) -> str:
        """One line saying what this draft is."""
        return f"prompt lookup (n-grams of {self.min_ngram}..{self.max_ngram} tokens, no draft model)"

    def drafter(self, target: Model, k_max: int, chunk: int, greedy: bool,
                kv: KVQuantization | None = None) -> NGramDrafter:
        return NGramDrafter(self)  # no cache: nothing to quantize

    def batch_drafter(self, target: Model, chunk: int, kv: KVQuantization | None = None) -> None:
        raise NotImplementedError("prompt lookup drafts each row alone")

    def check(self, target: Model, num_draft_tokens: int) -> None:
        """Prompt lookup proposes the text's own tokens: it drafts for any target."""

    def vocabulary(self, target: Model) -> int:
        return target.args.vocab_size

    def fingerprint(self) -> dict:
        return {"draft": repr(self)}


class NGramIndex:
    """Where each n-gram of a growing token list last occurred (n in 1..max_ngram). An
    n-gram enters the index once a token follows it, so a lookup of the list's own suffix
    finds an earlier occurrence, with at least one token after it."""

    def __init__(self, max_ngram: int) -> None:
        self.max_ngram = max_ngram
        self.tokens: list[int] = []
        self.ends: dict[tuple[int, ...], int] = {}  # n-gram -> end (exclusive) of its newest indexed occurrence

    def append(self, tokens: list[int]) -> None:
        for token in tokens:
            end = len(self.tokens)  # the n-grams ending here now have a follower
            for n in range(1, min(self.max_ngram, end) + 1):
                self.ends[tuple(self.tokens[end - n : end])] = end
            self.tokens.append(token)

    def lookup(self, n_max: int, n_min: int) -> tuple[int, int]:
        """(end of the newest earlier occurrence of the longest suffix n-gram found, how many
        tokens the match runs back, capped at the largest bucket); (-1, 0) when none matches."""
        size = len(self.tokens)
        for n in range(min(n_max, size - 1), n_min - 1, -1):
            end = self.ends.get(tuple(self.tokens[size - n :]))
            if end is not None:
                length = n
                while length < MATCH_BUCKETS[-1] and end - length > 0 and \
                        self.tokens[end - length - 1] == self.tokens[size - length - 1]:
                    length += 1
                return end, length
        return -1, 0


def match_key(length: int) -> str:
    """The acceptance class of a match that runs `length` tokens back."""
    bucket = max(b for b in MATCH_BUCKETS if b <= length)
    return f"lookup:{bucket}" + ("+" if bucket == MATCH_BUCKETS[-1] else "")


def match_prior(length: int) -> float:
    """Acceptance to assume for a match length not seen yet: the longer a match runs back,
    the likelier the copy goes on (a single repeated token is mostly chance)."""
    return min(0.9, 0.2 * length)


class NGramDrafter:
    """Prompt lookup over the verified text."""

    mode = "prompt lookup"
    feature_layers = None
    varies = True

    def __init__(self, draft: NGramDraft) -> None:
        self.draft = draft
        self.index = NGramIndex(draft.max_ngram)
        self.last: int | None = None
        self.matched: tuple[tuple[int, int], list[int], int] | None = None  # the last lookup, by (text length, last)

    def extend(self, tokens: list[int], features: mx.array | None = None) -> None:
        self.index.append(tokens)

    def _match(self, last: int) -> tuple[list[int], int]:
        """The continuation after the newest match of the text ending in `last` (the index
        holds everything before it), and the match length; the outlook's lookup is reused
        by the proposal that follows it."""
        at = (len(self.index.tokens), last)
        if self.matched is None or self.matched[0] != at:
            self.index.tokens.append(last)
            try:
                end, length = self.index.lookup(self.draft.max_ngram, self.draft.min_ngram)
                self.matched = at, (self.index.tokens[end : end + MAX_CONTINUATION] if end >= 0 else []), length
            finally:
                self.index.tokens.pop()
        return self.matched[1], self.matched[2]

    def outlook(self, last: int) -> Outlook:
        """What the next proposal would be: its match length's class and how many tokens."""
        continuation, length = self._match(last)
        if not continuation:
            return Outlook("lookup:none", 0)
        return Outlook(match_key(length), len(continuation), match_prior(length))

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        self.last = last
        return point_mass(self._match(last)[0][:k])

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None = None) -> None:
        self.index.append([self.last, *drafted[:accepted]])


def lookup_draft(settings: DraftSettings) -> NGramDraft:
    """Prompt lookup with the command line's n-gram sizes."""
    return NGramDraft(settings.max_ngram, settings.min_ngram)


register("ngram", lookup_draft, help="prompt lookup, no draft model (the answer's repeats of the prompt and of "
                                     "itself are drafted; a folder named ngram: ./ngram)")
