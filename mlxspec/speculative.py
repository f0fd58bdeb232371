"""Speculative decoding (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023, Algorithm 2).

Each round the draft proposes k tokens autoregressively, keeping its distributions q;
the target scores all k+1 positions in one pass (distributions p); draft token i is
accepted with probability min(1, p_i(x)/q_i(x)); at the first rejection a token is drawn
from norm(max(0, p - q)), and if all k pass a bonus token is drawn from p_{k+1}. The
output then follows the target's (processed) distribution exactly. Everything stays in
MLX arrays; one `tolist()` per round brings back the accepted count and the tokens.

Loop invariant: `last` is the newest token, fed to neither model yet; the target's cache
holds every token before it; the drafter (`drafters.py`) holds what its cache has not
consumed yet and catches up at the start of its next proposal.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import mlx.core as mx
from mlx.utils import tree_flatten

from .costmodel import MARGIN, AcceptanceEstimate, Timings, best_k
from .drafters import make_drafter
from .errors import InputError
from .feature_draft import FeatureDraft
from .stats import GenerationStats
from .model import Model
from .sampling import SamplingParams, process_logits, sample


def verify(target_logprobs: mx.array, draft_logprobs: mx.array | None, draft_tokens: mx.array,
           greedy: bool = False, support: mx.array | None = None) -> tuple[mx.array, mx.array]:
    """Rejection-sample one round. Shapes: p [B, k+1, V], q [B, k, S] (log-probabilities
    after temperature/top-k/top-p; q over the token ids `support`, or over the whole
    vocabulary, S = V, when it is None), tokens [B, k]. Returns (accepted count [B], next
    token [B]): the correction at the first rejected position, or the bonus token when all k
    pass. With `greedy`, p may be raw logits and q is unused: acceptance is argmax agreement."""
    B, k = draft_tokens.shape
    if greedy:
        choice = mx.argmax(target_logprobs, axis=-1)  # [B, k+1]
        n = mx.cumprod((choice[:, :k] == draft_tokens).astype(mx.int32), axis=-1).sum(axis=-1)
        return n, mx.take_along_axis(choice, n[:, None], axis=1)[:, 0]
    idx = draft_tokens[..., None]
    p_at = mx.take_along_axis(target_logprobs[:, :k], idx, axis=-1)[..., 0]
    if support is None:
        q_at = mx.take_along_axis(draft_logprobs, idx, axis=-1)[..., 0]
    else:
        q_at = mx.where(support == idx, draft_logprobs, -mx.inf).max(axis=-1)
    accepted = mx.log(mx.random.uniform(shape=(B, k))) < p_at - q_at
    n = mx.cumprod(accepted.astype(mx.int32), axis=-1).sum(axis=-1)
    # only row n is needed: the first rejected position, or the bonus (q = 0 there)
    row = lambda a: mx.take_along_axis(a, n[:, None, None], axis=1)[:, 0]  # noqa: E731
    no_draft = mx.full((B, 1, draft_logprobs.shape[-1]), -mx.inf, draft_logprobs.dtype)
    p, q = mx.exp(row(target_logprobs)), mx.exp(row(mx.concatenate([draft_logprobs, no_draft], axis=1)))
    residual = mx.maximum(p - q if support is None else p.at[:, support].subtract(q), 0.0)
    # p == q at a rejected row has probability zero; fall back to p rather than divide by zero
    residual = mx.where(residual.sum(axis=-1, keepdims=True) > 0, residual, p)
    return n, draw(residual)


def draw(weights: mx.array) -> mx.array:
    """One index per row of non-negative `weights` [B, V], with probability proportional to
    them (inverse CDF: one uniform per row, where `mx.random.categorical` needs V)."""
    cdf = mx.cumsum(weights, axis=-1)
    total = cdf[:, -1:]
    above = cdf > mx.random.uniform(shape=total.shape) * total
    # float rounding can put u at the total: then the last index that carries weight
    return mx.where(above.any(axis=-1), mx.argmax(above, axis=-1), mx.argmax(cdf >= total, axis=-1))


@dataclass
class SpeculativeStats(GenerationStats):
    """Generation stats plus what speculation did."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    draft_time: float = 0.0
    target_time: float = 0.0
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    k_counts: dict[int, int] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over drafted tokens."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        """Generated tokens per target pass."""
        return self.generation_tokens / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update(acceptance_rate=self.acceptance_rate, tokens_per_round=self.tokens_per_round)
        return out


class SpeculativeDecoder:
    """The state of one speculative generation: both caches, the pending tokens, the
    acceptance estimate and the draft-length policy. Batch size 1 for now; the state
    lives here so that batching can extend it."""

    def __init__(self, target: Model, draft: Model | FeatureDraft, params: SamplingParams, k_max: int,
                 adaptive: bool = True, timings: Timings | None = None, schedule: str = "cost",
                 prefill_chunk: int = 512, explore: float = 0.01) -> None:
        self.target, self.draft, self.params = target, draft, params
        self.k_max, self.adaptive, self.timings, self.schedule = k_max, adaptive, timings, schedule
        self.prefill_chunk, self.explore = prefill_chunk, explore
        self.target_cache = target.make_cache(max_rollback=k_max)
        self.drafter = make_drafter(draft, target, k_max, prefill_chunk)
        self.alpha = acceptance_memory(target, draft, params)
        self.k = k_max if schedule != "heuristic" else min(k_max, 5)
        self.plain_run = 32  # length of the next run of plain decoding
        self.ran_plain = False
        self.last: int | None = None
        self.stats = SpeculativeStats(accepted_per_position=[0] * k_max, drafted_per_position=[0] * k_max)

    def _target(self, tokens: mx.array) -> tuple[mx.array, mx.array | None]:
        """Target logits for `tokens` [1, n] after its cache, and its hidden states when the
        drafter reads them."""
        hidden = self.target.model(tokens, self.target_cache)
        return self.target.head(hidden), hidden if self.drafter.needs_features else None

    def prefill(self, prompt: list[int]) -> None:
        """Feed the prompt (all but its last token) to the target; the draft catches up lazily."""
        *head, self.last = prompt
        features = []
        for start in range(0, len(head), self.prefill_chunk):
            hidden = self.target.model(mx.array([head[start : start + self.prefill_chunk]]), self.target_cache)
            mx.eval(hidden if self.drafter.needs_features else [c.keys for c in self.target_cache])
            features.append(hidden)
        needed = self.drafter.needs_features and features
        self.drafter.extend(list(head), mx.concatenate(features, axis=1) if needed else None)

    def choose_k(self, budget: int) -> int:
        """Draft length for the next round, at most budget - 1 (a round yields up to k+1 tokens).
        0 means a run of plain decoding; after each such run one k=1 round (a probe) re-checks
        whether drafting pays again."""
        limit = max(0, min(self.k_max, budget - 1))
        if not self.adaptive:
            return limit
        if self.schedule == "heuristic":
            return min(self.k, limit)
        k = best_k(self.alpha.per_position(limit), self.timings, limit)
        if k > 0:
            return k
        if self.ran_plain and limit > 0 and best_k(1.0, self.timings, limit) > 0:
            # probe only if drafting could pay at all (not when even perfect acceptance loses)
            self.ran_plain = False
            return 1
        self.plain_run = self.probe_interval()
        return 0

    def probe_interval(self) -> int:
        """Plain steps before the next probe, so that probing costs at most `explore` of the
        decoding time: a probe is one k=1 round, which loses (vs plain steps making as many
        tokens) t_round(1) - (1 + alpha) t_plain at the current estimate, with the same
        margin as `best_k`. A useless draft is probed rarely; one whose acceptance is close
        to paying, often, which is when a noisy estimate most needs the fresh evidence."""
        t, alpha = self.timings, self.alpha.per_position(1)[0]
        loss = max(t.round(1) - (1 + alpha) * t.round(0) / (1 + MARGIN), 0.0)
        return max(1, min(512, math.ceil(loss / (self.explore * t.round(0)))))

    def _pick(self, logits: mx.array) -> tuple[mx.array, mx.array | None]:
        """Next token [B, 1] from logits [B, V], and the processed log-probabilities
        (None when greedy: argmax needs no distribution)."""
        if self.params.greedy:
            return mx.argmax(logits, axis=-1)[:, None], None
        lp = process_logits(logits, self.params)
        return mx.random.categorical(lp)[:, None], lp

    def round(self, k: int) -> list[tuple[int, bool]]:
        """One round drafting k >= 1 tokens; returns the new (token, from_draft) pairs."""
        s = self.stats
        start = time.perf_counter()
        draft_tokens, draft_lp, support = self.drafter.propose(self.last, k, self._pick)
        logits, hidden = self._target(mx.concatenate([mx.array([[self.last]]), draft_tokens], axis=1))
        target_lp = logits if self.params.greedy else process_logits(logits, self.params)
        n, correction = verify(target_lp, draft_lp, draft_tokens, self.params.greedy, support)
        result = mx.concatenate([n, draft_tokens[0], correction])
        mx.async_eval(result)
        mx.eval(draft_tokens)  # only to split the time between draft and target
        mid = time.perf_counter()
        n, *values = result.tolist()
        s.draft_time += mid - start
        s.target_time += time.perf_counter() - mid
        drafted, correction = values[:k], values[k]
        for c in self.target_cache:
            c.rollback(k - n)
        self.drafter.settle(n, drafted, hidden)
        self._record(k, n)
        self.last = correction
        return [(t, True) for t in drafted[:n]] + [(correction, False)]

    def plain(self, count: int) -> Iterator[tuple[int, bool]]:
        """k = 0: `count` plain decoding steps, pipelined like autoregressive decoding
        (the next step is queued before the current token is read back)."""
        s = self.stats

        def step(token: mx.array) -> tuple[mx.array, mx.array | None]:
            logits, hidden = self._target(token)
            return sample(logits[:, -1], self.params)[:, None], hidden  # no distribution to keep

        nxt, hidden = step(mx.array([[self.last]]))
        mx.async_eval(nxt)
        for i in range(count):
            start = time.perf_counter()
            current, current_hidden = nxt, hidden
            if i < count - 1:
                nxt, hidden = step(current)
                mx.async_eval(nxt)
            token = current.item()
            s.target_time += time.perf_counter() - start
            s.rounds += 1
            s.k_counts[0] = s.k_counts.get(0, 0) + 1
            self.drafter.extend([self.last], current_hidden)
            self.last = token
            yield token, False
        self.ran_plain = True

    def _record(self, k: int, n: int) -> None:
        s = self.stats
        s.rounds += 1
        s.drafted += k
        s.accepted += n
        s.k_counts[k] = s.k_counts.get(k, 0) + 1
        for i in range(k):
            s.drafted_per_position[i] += 1
            s.accepted_per_position[i] += int(i < n)
        self.alpha.update(n, k)
        if self.schedule == "heuristic":  # transformers' schedule: +2 on full acceptance, else -1
            self.k = min(self.k_max, self.k + 2) if n == k else max(1, self.k - 1)


_ACCEPTANCE: dict[tuple[int, int, float, float, int], AcceptanceEstimate] = {}


def acceptance_memory(target: Model, draft: Model | FeatureDraft, params: SamplingParams) -> AcceptanceEstimate:
    """The running acceptance estimate for this pair and these sampling settings, carried from
    one generation to the next in this process: a new request starts from what earlier ones
    measured instead of from the prior (which, for a short answer, would cost a good share of
    its rounds). Only the draft-length choice reads it; outputs never depend on it."""
    key = (id(target), id(draft), params.temperature, params.top_p, params.top_k)
    return _ACCEPTANCE.setdefault(key, AcceptanceEstimate())


def check_pair(target: Model, draft: Model, num_draft_tokens: int) -> None:
    """Raise `InputError` for a draft that cannot verify against this target; warn when
    the draft is not smaller than the target (speculation would only slow things down)."""
    if num_draft_tokens <= 0:
        raise InputError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
    if draft.args.vocab_size != target.args.vocab_size:
        raise InputError(
            f"draft vocabulary size {draft.args.vocab_size} differs from the target's {target.args.vocab_size}; "
            "drafts with another vocabulary are not supported yet"
        )
    if parameter_count(draft) >= parameter_count(target):
        warnings.warn(
            f"the draft ({parameter_count(draft) / 1e6:.0f}M parameters) is not smaller than the target "
            f"({parameter_count(target) / 1e6:.0f}M); speculation will not pay off", stacklevel=3,
        )


def parameter_count(model: Model) -> int:
    """Number of weights as stored (quantized weights count packed elements)."""
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def speculative_tokens(decoder: SpeculativeDecoder, prompt: list[int], budget: int) -> Iterator[tuple[int, bool]]:
    """Prefill, then run rounds until `budget` tokens were produced (the caller stops
    earlier at EOS). Yields (token, came from the draft)."""
    start = time.perf_counter()
    decoder.prefill(prompt)
    decoder.stats.prompt_time = time.perf_counter() - start
    produced = 0
    while produced < budget:
        k = decoder.choose_k(budget - produced)
        new = decoder.round(k) if k else decoder.plain(min(decoder.plain_run, budget - produced))
        for token, from_draft in new:
            produced += 1
            yield token, from_draft
            if produced == budget:
                return
