"""Running the target: a pass after its cache, the chunked prefill, and plain decoding
steps. Plain generation, speculative generation and the calibration all go through here."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import mlx.core as mx

from ..models import Cache, Model, layer_caches

Draw = Callable[[mx.array], mx.array]  # logits [1, vocab] -> token id [1]
# Which hidden states a drafter reads (its `feature_layers`): None, none; a tuple, the final
# hidden state followed by the outputs of those blocks (empty: the final state alone).
Taps = tuple[int, ...] | None


def default_chunk_size(model: Model) -> int:
    """Prompt tokens per prefill pass: the sliding window when there is one, else 2048."""
    return model.args.sliding_window or 2048


def forward(model: Model, tokens: mx.array, cache: list[Cache], taps: Taps) -> tuple[mx.array, mx.array | None]:
    """Logits [B, n, vocab] for `tokens` [B, n] after the cache, and when `taps` is not None
    the hidden states a feature draft reads ([B, n, d * (1 + len(taps))], see `Taps`): the
    model's own pass (`models.passes` for the port's models)."""
    return model.forward(tokens, cache, taps)


def prefill(model: Model, prompt: Sequence[int], cache: list[Cache], chunk: int,
            taps: Taps) -> tuple[mx.array, mx.array | None]:
    """Feed the whole prompt through the cache, `chunk` tokens a pass. Returns the logits
    after its last token [1, vocab] and, when `taps` is not None, the hidden states a feature
    draft reads at every position."""
    return model.prefill(prompt, layer_caches(cache), chunk, taps)


def plain_steps(model: Model, cache: list[Cache], token: int, count: int, draw: Draw, taps: Taps,
                stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, mx.array | None]]:
    """`count` plain decoding steps, the first feeding `token`: yields each new token and the
    hidden state at the position fed to make it. Pipelined: the next step is queued
    (`mx.async_eval`) before the current token is read back. `stop`, asked after each token
    is taken: True ends the run with the step already queued (one more token, none wasted)."""

    def step(fed: mx.array) -> tuple[mx.array, mx.array | None]:
        logits, hidden = forward(model, fed, cache, taps)
        return draw(logits[:, -1])[:, None], hidden

    nxt, hidden = step(mx.array([[token]]))
    mx.async_eval(nxt)
    i = 0
    while i < count:
        current, current_hidden = nxt, hidden
        if i < count - 1:
            nxt, hidden = step(current)
            mx.async_eval(nxt)
        yield current.item(), current_hidden
        if stop is not None and i < count - 2 and stop():
            count = i + 2
        i += 1
