"""A pass of one of the port's models, as the engine runs it: logits for every position
fed (and, for a feature draft, the hidden states it reads), and the chunked prefill of a
prompt, which computes the output head at its last position only."""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from .cache import LayerCaches


def forward(model, tokens: mx.array, cache: list, taps: tuple[int, ...] | None) -> tuple[mx.array, mx.array | None]:
    """Logits [B, n, vocab] for `tokens` [B, n] after `cache`; when `taps` is not None also
    the final hidden states followed by those blocks' outputs ([B, n, d * (1 + len(taps))])."""
    hidden = model.model(tokens, cache, taps or ())
    final = hidden[..., : model.args.hidden_size] if taps else hidden
    return model.head(final), None if taps is None else hidden


def prefill(model, prompt: Sequence[int], cache: LayerCaches, chunk: int,
            taps: tuple[int, ...] | None) -> tuple[mx.array, mx.array | None]:
    """Feed the whole prompt through `cache`, `chunk` tokens a pass. Returns the logits after
    its last token [1, vocab] and, when `taps` is not None, the hidden states at every position."""
    ids = mx.array(list(prompt))[None]
    kept = []
    for start in range(0, ids.shape[1], chunk):
        hidden = model.model(ids[:, start : start + chunk], cache, taps or ())
        if taps is not None:
            kept.append(hidden)
        mx.eval(hidden, [c.keys for c in cache if c.keys is not None])  # the cache writes, too
    logits = model.head(hidden[:, -1:, : model.args.hidden_size])[:, -1]
    return logits, None if taps is None else mx.concatenate(kept, axis=1)
