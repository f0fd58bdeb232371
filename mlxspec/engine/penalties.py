"""What the text so far does to the next token's logits, before temperature and truncation:
the repetition penalty (Keskar et al. 2019, as in mlx-lm and llama.cpp), OpenAI's presence
and frequency penalties, and a fixed logit bias per token id.

The penalties read a window of the newest `repetition_context` token ids before each
position (llama.cpp's `penalty_last_n`: one window for all three), so a verification pass
penalises position j by the tokens up to the j-th draft: exactly what plain decoding would
have seen there. The logit bias reads no text.
"""

from __future__ import annotations

import mlx.core as mx

from .sampling import SamplingParams


def recent_windows(history: list[int], drafts: mx.array | None, context: int, vocab: int) -> mx.array:
    """The token ids the penalties look at for each position of a pass that feeds the
    newest token and then `drafts` [k]: [k + 1, context] ids, position j seeing the last
    `context` of history + drafts[:j]; `vocab` pads where the text is shorter."""
    head = [vocab] * max(0, context - len(history)) + history[-context:]
    seq = mx.array(head, dtype=mx.int32)
    if drafts is not None and drafts.size:
        seq = mx.concatenate([seq, drafts.astype(mx.int32).reshape(-1)])
    k = seq.shape[0] - context
    return seq[mx.arange(k + 1)[:, None] + mx.arange(context)[None, :]]


def bias_vector(params: SamplingParams, vocab: int) -> mx.array:
    """The logit bias as a dense [vocab] vector (zero where none is set)."""
    ids, values = zip(*params.logit_bias)
    return mx.zeros((vocab,), mx.float32).at[mx.array(ids, dtype=mx.int32)].add(mx.array(values, mx.float32))


def penalize(logits: mx.array, recent: mx.array, params: SamplingParams, vocab: int,
             support: mx.array | None = None) -> mx.array:
    """`logits` [..., P, S] with the logit bias and the penalties applied: a token seen c > 0
    times among `recent` [P, R] ids (`vocab` pads) has its logit divided by
    `repetition_penalty` when positive (multiplied when negative), then lowered by
    `presence_penalty` + c * `frequency_penalty`. `support`: the token id of each of the S
    logits when they cover a subset of the vocabulary."""
    logits = logits.astype(mx.float32)
    if params.logit_bias:
        bias = bias_vector(params, vocab)
        logits = logits + (bias if support is None else bias[support])
    if not params.penalized:
        return logits
    P = recent.shape[0]
    counts = mx.zeros((P, vocab + 1), dtype=mx.int32).at[mx.arange(P)[:, None], recent].add(1)[:, :vocab]
    if support is not None:
        counts = counts[:, support]
    seen = counts > 0
    if params.repetition_penalty != 1.0:
        penalty = params.repetition_penalty
        logits = mx.where(seen, mx.where(logits < 0, logits * penalty, logits / penalty), logits)
    if params.presence_penalty or params.frequency_penalty:
        logits = logits - (seen * params.presence_penalty + counts.astype(mx.float32) * params.frequency_penalty)
    return logits
