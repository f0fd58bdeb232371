"""A request's format enforced token by token, losslessly under speculation.

The constrained distribution at a position is the target's processed distribution with
every token the grammar forbids after the text so far removed (its logit set to -inf
before temperature and truncation). Plain decoding samples from it. A speculative round
verifies position j of its pass with the mask that holds after the newest text and the
first j drafts: exactly what plain decoding would have used there, so rejection sampling
keeps the output on the constrained distribution (greedy: token for token equal to plain
constrained decoding). A draft token the grammar forbids has p = 0 and is always rejected.

Drafts are masked too (only so that more of them are accepted): a draft that proposes
token by token through the request's `pick` gets the mask after its own earlier proposals,
its q the distribution it really drew from. The matcher runs ahead over the drafts while
they are proposed and rolls back before verification; what a round keeps is then
consumed once (`advance`).

llguidance (https://github.com/guidance-ai/llguidance) computes a mask in microseconds to
a millisecond, validates and rolls back tokens, and reads the vocabulary as bytes."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..text import Tokenizer
from .format import ResponseFormat, guidance


def guided_tokenizer(tokenizer: Tokenizer, vocab: int) -> Any:
    """llguidance's view of `tokenizer` over `vocab` ids (a model may pad its vocabulary):
    each token's bytes, the ones that spell no text marked special. Built once per
    tokenizer and size (~0.1 s for 50k tokens)."""
    built = tokenizer.__dict__.setdefault("_guided", {})
    if vocab not in built:
        llg = guidance()
        spelled = tokenizer.token_bytes()
        specials = tokenizer.special_ids() | set(range(len(spelled), vocab))
        view = _Spelling(tokenizer, [spelled[i] if i < len(spelled) and spelled[i] is not None else b"" for i in
                                     range(vocab)], sorted(i for i in specials if i < vocab))
        built[vocab] = llg.LLTokenizer(llg.TokenizerWrapper(view), n_vocab=vocab, eos_token=sorted(tokenizer.eos_ids))
    return built[vocab]


class _Spelling:
    """What llguidance's `TokenizerWrapper` reads of a tokenizer: each id's bytes, the special
    ids, and text's ids as they would be in running text. SentencePiece (and HF tokenizers
    made from it) put a space before text of their own: text is encoded after a line break
    whose ids are then dropped, so that "a" is the ids of "a" and not of " a"."""

    MARK = "\n"

    def __init__(self, tokenizer: Tokenizer, tokens: list[bytes], special: list[int]) -> None:
        self.tokenizer, self.tokens, self.special_token_ids = tokenizer, tokens, special
        self.eos_token_id = min(tokenizer.eos_ids) if tokenizer.eos_ids else None
        self.bos_token_id = tokenizer.bos_id
        self._mark = tokenizer.encode(self.MARK, add_bos=False)

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        ids = self.tokenizer.encode(self.MARK + text, add_bos=False)
        if ids[: len(self._mark)] == self._mark:
            return ids[len(self._mark):]
        return self.tokenizer.encode(text, add_bos=False)


class Constraint:
    """One request's format over a target vocabulary of `vocab` ids (see the module)."""

    def __init__(self, fmt: ResponseFormat, tokenizer: Tokenizer, vocab: int) -> None:
        llg = guidance()
        self.vocab, self.eos = vocab, sorted(tokenizer.eos_ids)
        self.matcher = llg.LLMatcher(guided_tokenizer(tokenizer, vocab), fmt.grammar, log_level=0)
        if self.matcher.is_error():  # a limit of llguidance's reached with this vocabulary
            raise InputError(f"response_format: {' '.join(self.matcher.get_error().split())[:300]}")
        self._ahead = 0  # draft tokens the matcher has run ahead over
        self._trail: list[int] = []  # the draft tokens proposed this round
        self._seen: dict[tuple[int, ...], np.ndarray] = {}  # a round's masks, by the drafts before them

    @property
    def done(self) -> bool:
        """The grammar is complete (only an end-of-sequence token may follow) or broken."""
        return self.matcher.is_stopped() or self.matcher.is_error()

    def allowed(self) -> np.ndarray:
        """Which of the `vocab` ids may come next [vocab] (bool); when nothing may (a broken
        matcher), the end-of-sequence tokens, so that the text ends."""
        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), np.uint8), bitorder="little")
        allowed = bits[: self.vocab].astype(bool)
        if not allowed.any():
            allowed[self.eos] = True
        return allowed

    def masked(self, logits: mx.array, allowed: np.ndarray | None = None,
               support: mx.array | None = None) -> mx.array:
        """`logits` [..., S] with the forbidden ids at -inf (`allowed`: the mask, default the
        current one; `support`: the token id of each of the S logits when they cover a subset,
        or a longer or shorter vocabulary than the target's). Logits over ids none of which
        is allowed come back as they are: a draft may propose from them, and verification
        rejects what it proposes."""
        if allowed is None:
            self._rewind()
        keep = self.allowed() if allowed is None else allowed
        if support is not None:
            keep = keep[np.asarray(support)]
        elif keep.shape[-1] != logits.shape[-1]:
            keep = np.concatenate([keep, np.zeros(max(0, logits.shape[-1] - keep.shape[-1]), bool)])[: logits.shape[-1]]
        return mx.where(mx.array(keep), logits, -mx.inf) if keep.any() else logits

    def advance(self, tokens: list[int]) -> None:
        """`tokens` joined the text (a broken matcher then only allows an end)."""
        self._rewind()
        if not self.done:
            self.matcher.consume_tokens(tokens)

    def start_round(self) -> None:
        """A draft is about to propose after the text so far."""
        self._rewind()
        self._seen.clear()

    def draft_mask(self, logits: mx.array, support: mx.array | None) -> mx.array:
        """A draft's logits masked after its own proposals so far this round."""
        allowed = self.allowed()
        if self._ahead == len(self._trail):  # the matcher stands after every proposal so far
            self._seen[tuple(self._trail)] = allowed
        return self.masked(logits, allowed, support)

    def drafted(self, token: int) -> None:
        """The draft proposed `token`: run ahead over it (an end of sequence, or a token the
        grammar forbids, ends the running ahead; verification checks that position again)."""
        if self._ahead == len(self._trail) and self._step(token):
            self._ahead += 1
        self._trail.append(token)

    def verification_masks(self, drafts: list[int]) -> mx.array:
        """The masks [k + 1, vocab] for a pass over the newest token and `drafts` (k): row j
        after the first j drafts. After a forbidden draft every id is allowed (that draft
        is rejected for sure and the rows after it are never read); after an end of
        sequence only an end. The matcher ends where it started."""
        self._rewind()
        rows, consumed = [], 0
        for j in range(len(drafts) + 1):
            if j > consumed:
                ended = drafts[consumed] in self.eos and bool(rows[consumed][drafts[consumed]])
                rows.append(self._only_end() if ended else np.ones(self.vocab, dtype=bool))
                continue
            seen = self._seen.get(tuple(drafts[:j]))
            rows.append(seen if seen is not None else self.allowed())
            if j < len(drafts) and self._step(drafts[j]):
                consumed += 1
        self.matcher.rollback(consumed)
        return mx.array(np.stack(rows))

    def _step(self, token: int) -> bool:
        """Consume one token the grammar allows here (never an end of sequence: llguidance
        does not roll one back); False, consuming nothing, otherwise."""
        return token not in self.eos and not self.done and self.matcher.try_consume_tokens([token]) == 1

    def _only_end(self) -> np.ndarray:
        only = np.zeros(self.vocab, dtype=bool)
        only[self.eos] = True
        return only

    def _rewind(self) -> None:
        """Roll the matcher back over the drafts it ran ahead over."""
        if self._ahead:
            self.matcher.rollback(self._ahead)
        self._ahead = 0
        self._trail.clear()
