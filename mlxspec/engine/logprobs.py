"""Log-probabilities of the tokens a generation chose, as OpenAI's `logprobs` reports them:
each token's log-probability under the target's own distribution (the log-softmax of its
logits, before temperature, penalties and truncation) and the `top` most likely tokens
there. Kept as MLX arrays while decoding runs ahead and read back one token at a time."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import mlx.core as mx

from ..errors import InputError, InputTypeError
from ..validate import is_int

MAX_TOP_LOGPROBS = 20  # as OpenAI's API allows


def check_logprobs(logprobs: object) -> int | None:
    """None (off) or how many alternatives to report with each token, 0..MAX_TOP_LOGPROBS."""
    if logprobs is None:
        return None
    if not is_int(logprobs):
        raise InputTypeError(f"logprobs must be an integer (alternatives per token) or None, got {logprobs!r}")
    if not 0 <= logprobs <= MAX_TOP_LOGPROBS:
        raise InputError(f"logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {logprobs}")
    return int(logprobs)


class TokenLogprob(NamedTuple):
    """A chosen token's log-probability and the most likely tokens at its position."""

    logprob: float
    top: list[tuple[int, float]]  # (token id, log-probability), most likely first


class LogprobRecords:
    """The records of one generation, in the order its tokens come out; `top` None: off."""

    def __init__(self, top: int | None) -> None:
        self.top = top
        self._queue: deque = deque()
        self._open: mx.array | None = None

    def keep(self, logits: mx.array) -> None:
        """The next token is drawn from these logits [1, vocab] (`chose` gives it)."""
        if self.top is not None:
            self._open = logits[0].astype(mx.float32)

    def chose(self, token: mx.array) -> mx.array:
        """The token [1] drawn from the logits last kept; returned unchanged."""
        if self.top is not None:
            self._queue.append(self._record(self._open[None], token))
        return token

    def keep_pass(self, logits: mx.array, tokens: list[int]) -> None:
        """Tokens taken from consecutive positions of one pass (`logits` [n, vocab])."""
        if self.top is not None:
            rows = self._record(logits.astype(mx.float32), mx.array(tokens))
            self._queue.extend(tuple(a[i : i + 1] for a in rows) for i in range(len(tokens)))

    def _record(self, logits: mx.array, tokens: mx.array) -> tuple[mx.array, ...]:
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        chosen = mx.take_along_axis(lp, tokens.reshape(-1, 1).astype(mx.int32), axis=-1)[:, 0]
        if not self.top:
            return (chosen,)
        ids = mx.argpartition(-lp, self.top - 1, axis=-1)[:, : self.top]
        return chosen, ids, mx.take_along_axis(lp, ids, axis=-1)

    def next(self) -> TokenLogprob | None:
        """The record of the next token out (None when logprobs are off)."""
        if self.top is None:
            return None
        chosen, *top = self._queue.popleft()
        pairs = list(zip(top[0][0].tolist(), top[1][0].tolist())) if top else []
        pairs.sort(key=lambda pair: -pair[1])
        return TokenLogprob(chosen.item(), pairs)
