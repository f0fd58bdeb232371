"""Exact rejection sampling (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023,
Algorithm 2): draft token i is accepted with probability min(1, p_i(x)/q_i(x)); at the first
rejection a token is drawn from norm(max(0, p - q)), and if all k pass a bonus token is
drawn from p_{k+1}. The output then follows the target's (processed) distribution exactly.
Pure functions of MLX arrays; batched over rows."""

from __future__ import annotations

import mlx.core as mx


def verify(target_logprobs: mx.array, draft_logprobs: mx.array | None, draft_tokens: mx.array,
           greedy: bool = False, support: mx.array | None = None,
           key: mx.array | None = None) -> tuple[mx.array, mx.array]:
    """Rejection-sample one round. Shapes: p [B, k+1, V], q [B, k, S] (log-probabilities
    after temperature/top-k/top-p; q over the token ids `support`, or over the whole
    vocabulary, S = V, when it is None; an id may stand in `support` more than once, its q
    the sum of its entries), tokens [B, k]. Returns (accepted count [B], next
    token [B]): the correction at the first rejected position, or the bonus token when all k
    pass. With `greedy`, p may be raw logits and q is unused: acceptance is argmax agreement.
    `key` seeds the round's draws (None: MLX's global stream)."""
    B, k = draft_tokens.shape
    if greedy:
        choice = mx.argmax(target_logprobs, axis=-1)  # [B, k+1]
        n = mx.cumprod((choice[:, :k] == draft_tokens).astype(mx.int32), axis=-1).sum(axis=-1)
        return n, mx.take_along_axis(choice, n[:, None], axis=1)[:, 0]
    accept_key, draw_key = mx.random.split(key) if key is not None else (None, None)
    idx = draft_tokens[..., None]
    p_at = mx.take_along_axis(target_logprobs[:, :k], idx, axis=-1)[..., 0]
    if support is None:
        q_at = mx.take_along_axis(draft_logprobs, idx, axis=-1)[..., 0]
    else:  # a token may stand in `support` more than once (twin spellings): its q is their sum
        q_at = mx.logsumexp(mx.where(support == idx, draft_logprobs, -mx.inf), axis=-1)
    accepted = mx.log(mx.random.uniform(shape=(B, k), key=accept_key)) < p_at - q_at
    n = mx.cumprod(accepted.astype(mx.int32), axis=-1).sum(axis=-1)
    # only row n is needed: the first rejected position, or the bonus (q = 0 there)
    row = lambda a: mx.take_along_axis(a, n[:, None, None], axis=1)[:, 0]  # noqa: E731
    no_draft = mx.full((B, 1, draft_logprobs.shape[-1]), -mx.inf, draft_logprobs.dtype)
    p, q = mx.exp(row(target_logprobs)), mx.exp(row(mx.concatenate([draft_logprobs, no_draft], axis=1)))
    residual = mx.maximum(p - q if support is None else p.at[:, support].subtract(q), 0.0)
    # p == q at a rejected row has probability zero; fall back to p rather than divide by zero
    residual = mx.where(residual.sum(axis=-1, keepdims=True) > 0, residual, p)
    return n, draw(residual, draw_key)


def draw(weights: mx.array, key: mx.array | None = None) -> mx.array:
    """One index per row of non-negative `weights` [B, V], with probability proportional to
    them (inverse CDF: one uniform per row, where `mx.random.categorical` needs V)."""
    cdf = mx.cumsum(weights, axis=-1)
    total = cdf[:, -1:]
    above = cdf > mx.random.uniform(shape=total.shape, key=key) * total
    # float rounding can put u at the total: then the last index that carries weight
    return mx.where(above.any(axis=-1), mx.argmax(above, axis=-1), mx.argmax(cdf >= total, axis=-1))
