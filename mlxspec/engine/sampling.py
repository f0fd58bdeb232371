"""From logits to a next token: temperature, top-k, top-p, min-p, the draw, and each
request's own random stream (the penalties and the logit bias come first: `penalties`).

`process_logits` returns the log-probabilities of the distribution actually sampled
from. Rejection sampling keeps the output exactly on the target's *processed*
distribution p whatever distribution q the draft drew from, as long as q is the one it
really drew from; so every option is applied to the target's logits (that is what makes
it the output's distribution) and the same options are applied to the draft's (so that q
resembles p and more drafts are accepted).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import mlx.core as mx

from ..errors import InputError, InputTypeError
from ..validate import is_int, is_real

MIN_TEMPERATURE = 1e-6  # smaller ones divide as this (see `scaled`)
SEED_RANGE = 2**64  # seeds are 0 .. 2**64 - 1; -1 means "random", as in llama.cpp


def check_seed(seed: object) -> int | None:
    """The seed as an int, None for "random" (None or -1); `InputError` otherwise."""
    if seed is None or (is_int(seed) and seed == -1):
        return None
    if not is_int(seed):
        raise InputTypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < SEED_RANGE:
        raise InputError(f"seed must be in 0..2**64-1 (or -1 for a random one), got {seed}")
    return int(seed)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens: the part of a request's options (`GenerationOptions`) that shapes
    the distribution. temperature 0 means greedy (argmax); top_k 0, top_p 1, min_p 0 and
    the penalties at 1 / 0 disable them. `logit_bias` holds (token id, bias) pairs, sorted."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0  # drop tokens less likely than min_p times the most likely one (0 disables)
    repetition_penalty: float = 1.0  # > 1 discourages tokens among the last `repetition_context` (1 disables)
    repetition_context: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            if not is_real(getattr(self, name)):
                raise InputTypeError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not is_int(self.top_k):
            raise InputTypeError(f"top_k must be an integer, got {self.top_k!r}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise InputError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise InputError(f"min_p must be in [0, 1) (0 disables it), got {self.min_p}")
        if not (0 < self.repetition_penalty and math.isfinite(self.repetition_penalty)):
            raise InputError(f"repetition_penalty must be a finite number > 0 (1 disables it), "
                             f"got {self.repetition_penalty}")
        if not is_int(self.repetition_context) or not 1 <= self.repetition_context <= 4096:
            raise InputError(f"repetition_context must be an integer in 1..4096, got {self.repetition_context!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise InputError(f"{name} must be in -2..2 (0 disables it), got {getattr(self, name)}")
        check_logit_bias(self.logit_bias)

    @property
    def penalized(self) -> bool:
        """True when a penalty reading the text so far changes logits."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0 or self.frequency_penalty != 0

    @property
    def shaped(self) -> bool:
        """True when logits are changed before temperature (a penalty or a logit bias)."""
        return self.penalized or bool(self.logit_bias)

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.temperature == 0 or self.top_k == 1

    @property
    def truncation(self) -> str:
        """The truncations that apply ("none", "top-k", "top-p" or "top-k+top-p"): what a
        draw costs depends on these (each sorts the vocabulary), not on the temperature."""
        kinds = [name for name, on in (("top-k", self.top_k > 0), ("top-p", self.top_p < 1.0),
                                       ("min-p", self.min_p > 0)) if on]
        return "+".join(kinds) or "none"


MAX_LOGIT_BIAS = 100.0  # OpenAI's range: -100 bans a token, 100 all but forces it


def check_logit_bias(pairs: object) -> None:
    """(token id >= 0, bias in -100..100) pairs; the ids' upper bound is the model's to check."""
    if not isinstance(pairs, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        raise InputTypeError(f"logit_bias must map token ids to numbers, got {pairs!r}")
    for token, bias in pairs:
        if not is_int(token) or token < 0:
            raise InputError(f"logit_bias: a token id must be an integer >= 0, got {token!r}")
        if not is_real(bias) or not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
            raise InputError(f"logit_bias: the bias of token {token} must be a number in -100..100, got {bias!r}")


def scaled(logits: mx.array, temperature: float) -> mx.array:
    """logits / temperature, shifted so the largest is 0: no overflow to inf (and NaN) however
    small the temperature. Below MIN_TEMPERATURE float32 cannot tell temperatures apart, so
    that is the smallest divisor used."""
    top = mx.max(logits, axis=-1, keepdims=True)
    return (logits - top) * (1.0 / max(temperature, MIN_TEMPERATURE))


def top_k_mask(logits: mx.array, k: int) -> mx.array:
    """True for the k largest logits on the last axis (and any tied with the k-th)."""
    if k <= 0 or k >= logits.shape[-1]:
        return mx.ones(logits.shape, dtype=mx.bool_)
    n = logits.shape[-1] - k
    kth = mx.partition(logits, n, axis=-1)[..., n : n + 1]  # the k-th largest, without a full sort
    return logits >= kth


def top_p_mask(logprobs: mx.array, p: float) -> mx.array:
    """True for the smallest set of most likely tokens whose probability reaches p (nucleus),
    and any tied with the least likely of them. Found as a threshold on the sorted values
    (no index sort and no scatter back)."""
    if p >= 1.0:
        return mx.ones(logprobs.shape, dtype=mx.bool_)
    ascending = mx.sort(logprobs, axis=-1)
    mass_above = mx.cumsum(mx.exp(ascending), axis=-1, reverse=True, inclusive=False)
    dropped = (mass_above >= p).sum(axis=-1, keepdims=True)  # the least likely tokens, not needed to reach p
    dropped = mx.minimum(dropped, logprobs.shape[-1] - 1)  # the most likely token always stays (p below float32)
    return logprobs >= mx.take_along_axis(ascending, dropped, axis=-1)


def process_logits(logits: mx.array, params: SamplingParams, normalize: bool = True) -> mx.array:
    """Log-probabilities after temperature, top-k and top-p (masked tokens get -inf).
    `normalize=False` skips renormalising after top-p: enough to draw from, not to compare.

    For greedy parameters the result is a one-hot distribution on the argmax."""
    logits = logits.astype(mx.float32)
    if params.greedy:
        top = mx.argmax(logits, axis=-1, keepdims=True)
        hot = mx.arange(logits.shape[-1]) == top
        return mx.where(hot, 0.0, -mx.inf)
    logits = scaled(logits, params.temperature)
    if 0 < params.top_k < logits.shape[-1]:
        logits = mx.where(top_k_mask(logits, params.top_k), logits, -mx.inf)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    cut = False
    if params.top_p < 1.0:
        logprobs = mx.where(top_p_mask(logprobs, params.top_p), logprobs, -mx.inf)
        cut = True
    if params.min_p > 0:  # relative to the most likely token, whose log-probability is the maximum
        floor = mx.max(logprobs, axis=-1, keepdims=True) + math.log(params.min_p)
        logprobs = mx.where(logprobs >= floor, logprobs, -mx.inf)
        cut = True
    if cut and normalize:
        logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
    return logprobs


def sample(logits: mx.array, params: SamplingParams, key: mx.array | None = None) -> mx.array:
    """Draw one token id per row of `logits` ([..., vocab] -> [...]) with the random `key`
    (None: MLX's global stream)."""
    if params.greedy:
        return mx.argmax(logits, axis=-1)
    if params.truncation == "none":  # plain temperature: no need to normalise
        return mx.random.categorical(scaled(logits.astype(mx.float32), params.temperature), axis=-1, key=key)
    return mx.random.categorical(process_logits(logits, params, normalize=False), axis=-1, key=key)


class RandomKeys:
    """One request's own random stream: a fresh key for every draw, split from a key made
    from `seed` (None: from the operating system). Requests never share MLX's global
    stream, so a seeded request draws the same numbers whatever ran before it."""

    def __init__(self, seed: int | None = None) -> None:
        seed = check_seed(seed)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self._key = mx.random.key(seed)

    def __call__(self) -> mx.array:
        """The next key."""
        self._key, key = mx.random.split(self._key)
        return key
