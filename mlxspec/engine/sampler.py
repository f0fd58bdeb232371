"""One request's draws: its sampling settings, random stream and text so far, applied the
same way wherever its tokens come from (a prefill, a plain step, a draft, a verification
pass; alone or as one row of a batch).

The penalties read the text before each position, so the sampler keeps the
request's `history` (the prompt and every token produced, the newest last) and, while
plain steps or a draft run ahead without reading tokens back, a window of the newest
tokens as an MLX array.
"""

from __future__ import annotations

import mlx.core as mx

from ..drafts.protocol import Proposal
from ..structured import Constraint
from .logprobs import LogprobRecords
from .penalties import penalize, recent_windows
from .sampling import RandomKeys, SamplingParams, process_logits, sample
from .verify import verify


class Sampler:
    """Draws for one request over a target vocabulary of `vocab` tokens; `logprobs` (None:
    off) keeps each token's log-probability record (see `LogprobRecords`); `constraint`
    (None: free text) holds every draw to the request's format (`mlxspec.structured`)."""

    def __init__(self, params: SamplingParams, keys: RandomKeys, vocab: int, logprobs: int | None = None,
                 constraint: Constraint | None = None) -> None:
        self.params, self.keys, self.vocab, self.constraint = params, keys, vocab, constraint
        self.records = LogprobRecords(logprobs)
        self.history: list[int] = []
        self._recent: mx.array | None = None  # the penalty's window through the newest token fed
        self._draft_recent: mx.array | None = None

    def key(self) -> mx.array | None:
        """The next random key (None when greedy: argmax needs none)."""
        return None if self.params.greedy else self.keys()

    def _window(self, drafts: mx.array | None = None) -> mx.array:
        return recent_windows(self.history, drafts, self.params.repetition_context, self.vocab)

    def draw(self, logits: mx.array) -> mx.array:
        """The next token [1] from the target's logits [1, vocab] after `history` (and the
        tokens drawn since without being added: plain steps run ahead)."""
        self.records.keep(logits)
        if self.params.shaped:
            if self._recent is None:
                self._recent = self._window()
            logits = penalize(logits, self._recent, self.params, self.vocab)
        if self.constraint is not None:
            logits = self.constraint.masked(logits)
        token = sample(logits, self.params, self.key())
        if self.params.shaped:
            self._recent = mx.concatenate([self._recent[:, 1:], token[:, None].astype(mx.int32)], axis=1)
        if self.constraint is not None:  # the next mask needs this token: read it now
            self.constraint.advance(token.tolist())
        return self.records.chose(token)

    def added(self, tokens: list[int]) -> None:
        """Tokens that joined the text (the window follows `draw`'s own tokens already)."""
        self.history.extend(tokens)

    def start_round(self) -> None:
        """A draft is about to propose after `history`."""
        self._draft_recent = self._window() if self.params.shaped else None
        if self.constraint is not None:
            self.constraint.start_round()

    def pick(self, logits: mx.array, support: mx.array | None = None,
             target_ids: bool = False) -> tuple[mx.array, mx.array | None]:
        """A draft's next token [1, 1] from its logits [1, S], and the processed
        log-probabilities it was drawn from (None when greedy). Logits over target ids get
        the repetition penalty too (see `mlxspec.engine.sampling`)."""
        penalized = self.params.shaped and target_ids
        if penalized:
            logits = penalize(logits, self._draft_recent, self.params, self.vocab, support)
        if self.constraint is not None and target_ids:
            logits = self.constraint.draft_mask(logits, support)
        if self.params.greedy:
            token, lp = mx.argmax(logits, axis=-1)[:, None], None
        else:
            lp = process_logits(logits, self.params)
            token = mx.random.categorical(lp, key=self.keys())[:, None]
        ids = token if support is None else support[token]
        if penalized:
            self._draft_recent = mx.concatenate([self._draft_recent[:, 1:], ids.astype(mx.int32)], axis=1)
        if self.constraint is not None and target_ids:
            self.constraint.drafted(ids.item())
        return token, lp

    def verify(self, raw: mx.array, proposal: Proposal) -> tuple[mx.array, mx.array]:
        """Rejection-sample a round: `raw` [1, k+1, vocab] are the target's logits over the
        newest token and the k drafts. Returns (accepted count [1], next token [1])."""
        logits = raw
        if self.params.shaped:
            windows = self._window(proposal.tokens)
            logits = penalize(raw[0], windows, self.params, self.vocab)[None]
        if self.constraint is not None:
            logits = mx.where(self.constraint.verification_masks(proposal.tokens[0].tolist()), logits, -mx.inf)
        target_lp = logits if self.params.greedy else process_logits(logits, self.params)
        return verify(target_lp, proposal.logprobs, proposal.tokens, self.params.greedy, proposal.support, self.key())

    def settle(self, raw: mx.array, tokens: list[int]) -> None:
        """A round kept `tokens` (the accepted drafts and the next token), read at the first
        rows of its target logits `raw` [1, k+1, vocab]."""
        self.history.extend(tokens)
        self._recent = None
        if self.constraint is not None:
            self.constraint.advance(tokens)
        self.records.keep_pass(raw[0, : len(tokens)], tokens)
