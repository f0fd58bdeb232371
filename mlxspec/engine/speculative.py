"""The speculative loop (Leviathan et al. 2023; Chen et al. 2023): each round a drafter
proposes k tokens with their distributions q, the target scores all k+1 positions in one
pass, `verify` keeps what exact rejection sampling accepts, and both sides roll back the
rest. A policy picks k before each round; k = 0 runs plain decoding steps, and with no
drafter at all the same loop is plain generation. Everything stays in MLX arrays; one
`tolist()` per round brings back the accepted count and the tokens.

Loop invariant: `last` is the newest token, fed to neither model yet; the target's cache
holds every token before it; the drafter holds what its cache has not consumed yet and
catches up at the start of its next proposal.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

import mlx.core as mx

from ..drafts import Drafter
from ..drafts.protocol import MODEL_OUTLOOK, Outlook
from ..errors import CheckpointError
from ..models import Model
from .decode import forward, plain_steps, prefill
from .policy import DraftPolicy
from .sampling import RandomKeys, SamplingParams, process_logits, sample
from .stats import GenerationStats, SpeculativeStats
from .verify import verify


def check_finite(logits: mx.array, whose: str) -> None:
    """Stop with one line when a model's first logits hold NaN or Inf (damaged weights, or a
    dtype that overflows): everything it would decode afterwards is garbage."""
    if not mx.isfinite(logits).all().item():
        raise CheckpointError(f"{whose}'s first logits hold NaN or Inf: its weights (or config values) are damaged, "
                              "or overflow in this dtype (try float32 weights: --dequantize)")


class Generation:
    """The state of one generation: the target's cache, the drafter (None: plain decoding),
    the draft-length policy, the request's random stream, the newest token and the stats."""

    def __init__(self, target: Model, drafter: Drafter | None, policy: DraftPolicy, params: SamplingParams,
                 keys: RandomKeys, prefill_chunk: int) -> None:
        self.target, self.drafter, self.policy, self.params = target, drafter, policy, params
        self.keys, self.chunk = keys, prefill_chunk
        self.cache = target.make_cache(max_rollback=policy.k_max)
        self.last: int | None = None
        self._draft_checked = False
        self.stats: GenerationStats = (GenerationStats() if drafter is None else SpeculativeStats(
            draft_mode=drafter.mode, accepted_per_position=[0] * policy.k_max, drafted_per_position=[0] * policy.k_max))

    @property
    def keeps_features(self) -> bool:
        """Whether the drafter reads the target's hidden states."""
        return self.drafter is not None and self.drafter.needs_features

    def _key(self) -> mx.array | None:
        return None if self.params.greedy else self.keys()

    def _draw(self, logits: mx.array) -> mx.array:
        """A token id per row of the target's logits, from the processed distribution."""
        return sample(logits, self.params, self._key())

    def _pick(self, logits: mx.array) -> tuple[mx.array, mx.array | None]:
        """A drafter's next token [B, 1] from its logits [B, S], and the processed
        log-probabilities it was drawn from (None when greedy: argmax needs none)."""
        if not self._draft_checked:
            check_finite(logits, "the draft")
            self._draft_checked = True
        if self.params.greedy:
            return mx.argmax(logits, axis=-1)[:, None], None
        lp = process_logits(logits, self.params)
        return mx.random.categorical(lp, key=self.keys())[:, None], lp

    def prefill(self, prompt: Sequence[int]) -> int:
        """Feed the prompt to the target (the drafter catches up lazily); the first new token."""
        logits, hidden = prefill(self.target, prompt, self.cache, self.chunk, self.keeps_features)
        if self.drafter is not None:
            self.drafter.extend(list(prompt), hidden)
        check_finite(logits, "the target")
        self.last = self._draw(logits).item()
        return self.last

    def round(self, k: int) -> list[tuple[int, bool]]:
        """One round drafting up to k >= 1 tokens (a drafter may offer fewer); returns the
        new (token, from_draft) pairs."""
        assert self.drafter is not None and isinstance(self.stats, SpeculativeStats)
        start = time.perf_counter()
        proposal = self.drafter.propose(self.last, k, self._pick)
        k = proposal.tokens.shape[1]
        if k == 0:
            return self._undrafted_step()
        fed = mx.concatenate([mx.array([[self.last]]), proposal.tokens], axis=1)
        logits, hidden = forward(self.target, fed, self.cache, self.keeps_features)
        target_lp = logits if self.params.greedy else process_logits(logits, self.params)
        n, correction = verify(target_lp, proposal.logprobs, proposal.tokens, self.params.greedy,
                               proposal.support, self._key())
        result = mx.concatenate([n, proposal.tokens[0], correction])
        mx.async_eval(result)
        mx.eval(proposal.tokens)  # only to split the time between draft and target
        mid = time.perf_counter()
        n, *values = result.tolist()
        self.stats.draft_time += mid - start
        self.stats.target_time += time.perf_counter() - mid
        drafted, correction = values[:k], values[k]
        for c in self.cache:
            c.rollback(k - n)
        self.drafter.settle(n, drafted, hidden)
        self.stats.record(k, n)
        self.policy.observe(k, n)
        self.last = correction
        return [(t, True) for t in drafted[:n]] + [(correction, False)]

    def _undrafted_step(self) -> list[tuple[int, bool]]:
        """A round whose drafter had nothing to propose: one plain step, settled as a round."""
        logits, hidden = forward(self.target, mx.array([[self.last]]), self.cache, self.keeps_features)
        self.last = self._draw(logits[:, -1]).item()
        self.drafter.settle(0, [], hidden)
        self.stats.record(0, 0)
        self.policy.observe(0, 0)
        return [(self.last, False)]

    def plain(self, count: int, stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, bool]]:
        """k = 0: `count` plain decoding steps (pipelined); `stop` may end them early (see
        `plain_steps`)."""
        for token, hidden in plain_steps(self.target, self.cache, self.last, count, self._draw,
                                         self.keeps_features, stop):
            self.stats.record(0, 0)
            self.policy.observe(0, 0)
            if self.drafter is not None:
                self.drafter.extend([self.last], hidden)
            self.last = token
            yield token, False

    def outlook(self) -> Outlook:
        """What the drafter would propose after `last`."""
        return self.drafter.outlook(self.last) if self.drafter is not None else MODEL_OUTLOOK

    def wants_draft(self, left: int) -> bool:
        """During plain steps: whether a drafter whose outlook changes token by token now
        has a proposal the policy would draft."""
        return left > 2 and self.policy.next_k(left - 1, self.outlook()) > 0

    def run(self, prompt: Sequence[int], budget: int) -> Iterator[tuple[int, bool]]:
        """Prefill, then rounds until `budget` >= 1 tokens were produced (the caller stops
        earlier at an end-of-sequence token). Yields (token, came from the draft)."""
        start = time.perf_counter()
        first = self.prefill(prompt)
        self.stats.prompt_time = time.perf_counter() - start
        yield first, False
        produced = 1
        while produced < budget:
            left = budget - produced
            k = self.policy.next_k(left, self.outlook())
            if k:
                steps = self.round(k)
            elif self.drafter is not None and self.drafter.varies:  # plain until a proposal is worth drafting
                steps = self.plain(left, lambda: self.wants_draft(budget - produced))
            else:
                steps = self.plain(self.policy.plain_steps(left))
            for token, from_draft in steps:
                produced += 1
                yield token, from_draft
                if produced == budget:
                    return
