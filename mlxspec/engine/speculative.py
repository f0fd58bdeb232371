"""The speculative loop of one sequence (Leviathan et al. 2023; Chen et al. 2023): a policy
picks k before each round; a round (`round.speculative_round`, the one a batch runs too,
here over one row) drafts k tokens, verifies them in one target pass and rolls back what
was not kept; k = 0 runs plain decoding steps, pipelined, and with no drafter at all the
same loop is plain generation.

Loop invariant: `last` is the newest token, fed to neither model yet; the target's cache
holds every token before it; the drafter holds what its cache has not consumed yet and
catches up at the start of its next proposal.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

import mlx.core as mx

from ..drafts import BatchDrafter
from ..drafts.protocol import MODEL_OUTLOOK, Outlook
from ..errors import CheckpointError
from ..models import Model, layer_caches
from ..structured import Constraint
from .decode import Taps, plain_steps, prefill
from .policy import DraftPolicy
from .prompt_cache import FeatureLog
from .round import SequenceCache, speculative_round
from .sampler import Sampler
from .sampling import RandomKeys, SamplingParams
from .stats import GenerationStats, SpeculativeStats


def check_finite(logits: mx.array, whose: str) -> None:
    """Stop with one line when a model's first logits hold NaN or Inf (damaged weights, or a
    dtype that overflows): everything it would decode afterwards is garbage."""
    if not mx.isfinite(logits).all().item():
        raise CheckpointError(f"{whose}'s first logits hold NaN or Inf: its weights (or config values) are damaged, "
                              "or overflow in this dtype (try float32 weights: --dequantize)")


class Generation:
    """The state of one generation: the target's cache, the drafter (None: plain decoding),
    the draft-length policy, the request's draws (`sampler`: settings, random stream, the
    text so far) and the stats.

    `cache` may come holding the first `reused` prompt tokens already (a prompt cache);
    `logprobs` (None: off) keeps the log-probability of every token and its `logprobs`
    most likely alternatives, under the target's unprocessed distribution; `constraint`
    (None: free text) holds the output to a format."""

    def __init__(self, target: Model, drafter: BatchDrafter | None, policy: DraftPolicy, params: SamplingParams,
                 keys: RandomKeys, prefill_chunk: int, cache: list | None = None, reused: int = 0,
                 logprobs: int | None = None, constraint: Constraint | None = None,
                 prior: mx.array | None = None) -> None:
        self.target, self.drafter, self.policy, self.params = target, drafter, policy, params
        self.chunk, self.reused = prefill_chunk, reused
        self.cache = layer_caches(cache) if cache is not None else target.make_cache(max_rollback=policy.k_max)
        self.pass_cache = SequenceCache(self.cache)
        self.sampler = Sampler(params, keys, target.args.vocab_size, logprobs, constraint)
        self.log = FeatureLog(prior)  # the target's hidden states over the cache, as the drafter read them
        self.last: int | None = None
        self._draft_checked = False
        self.stats: GenerationStats = (GenerationStats() if drafter is None else SpeculativeStats(
            draft_mode=drafter.mode, accepted_per_position=[0] * policy.k_max, drafted_per_position=[0] * policy.k_max))

    @property
    def keeps_features(self) -> Taps:
        """Which of the target's hidden states the drafter reads (None: none)."""
        return None if self.drafter is None else self.drafter.feature_layers

    @property
    def history(self) -> list[int]:
        """The prompt and every token produced (the newest is `last`)."""
        return self.sampler.history

    def _draw(self, logits: mx.array) -> mx.array:
        return self.sampler.draw(logits)

    def pick(self, logits: mx.array, support: mx.array | None = None,
             target_ids: bool = False) -> tuple[mx.array, mx.array | None]:
        """The sampler's pick, the draft's first logits checked for NaN/Inf."""
        if not self._draft_checked:
            check_finite(logits, "the draft")
            self._draft_checked = True
        return self.sampler.pick(logits, support, target_ids)

    def prefill(self, prompt: Sequence[int]) -> int:
        """Feed the prompt to the target (all but the `reused` tokens its cache came with;
        the drafter catches up lazily); the first new token."""
        self.sampler.added(list(prompt))
        logits, hidden = prefill(self.target, prompt[self.reused:], self.cache, self.chunk, self.keeps_features)
        if hidden is not None:
            self.log.add(hidden)
            hidden = self.log.held(len(prompt))  # with the reused prefix's, kept in the prompt cache
        if self.drafter is not None:
            self.drafter.add(list(prompt), hidden, self.params.greedy)
        check_finite(logits, "the target")
        self.last = self._draw(logits).item()
        self.sampler.added([self.last])
        return self.last

    def round(self, k: int) -> list[tuple[int, bool]]:
        """One round drafting up to k >= 1 tokens (a drafter may offer fewer, even none: then
        it is a plain step); returns the new (token, from_draft) pairs."""
        assert self.drafter is not None and isinstance(self.stats, SpeculativeStats)
        done = speculative_round(self.target, self.pass_cache, self.drafter, [self], [k], self.keeps_features)
        k, n, kept = done.lengths[0], done.accepted[0], done.kept(0)
        self.stats.draft_time += done.draft_time
        self.stats.target_time += done.target_time
        self.stats.record(k, n)
        self.policy.observe(k, n)
        self.last = kept[-1]
        if done.hidden is not None:
            self.log.add(done.hidden[:, : n + 1])
        if k:
            self.sampler.settle(done.raw, kept)
        else:
            self.sampler.added(kept)
        return [(t, True) for t in kept[:-1]] + [(kept[-1], False)]

    def plain(self, count: int, stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, bool]]:
        """k = 0: `count` plain decoding steps (pipelined); `stop` may end them early (see
        `plain_steps`)."""
        for token, hidden in plain_steps(self.target, self.cache, self.last, count, self._draw,
                                         self.keeps_features, stop):
            self.stats.record(0, 0)
            self.policy.observe(0, 0)
            if self.drafter is not None:
                self.drafter.extend(0, [self.last], hidden)
            if hidden is not None:
                self.log.add(hidden)
            self.last = token
            self.sampler.added([token])
            yield token, False

    def outlook(self) -> Outlook:
        """What the drafter would propose after `last`."""
        return self.drafter.outlook(0, self.last) if self.drafter is not None else MODEL_OUTLOOK

    def wants_draft(self, left: int) -> bool:
        """During plain steps: whether a drafter whose outlook changes token by token now
        has a proposal the policy would draft."""
        return left > 2 and self.policy.next_k(left - 1, self.outlook()) > 0

    def features(self) -> mx.array | None:
        """The target's hidden states over the tokens its cache holds (None: none were read).
        A pipelined plain step may have fed one more token than were logged: the cache is
        rolled back to the logged ones first."""
        ahead = self.cache.offset - len(self.log)
        if self.keeps_features is None or not 0 <= ahead <= self.cache.max_rollback:
            return None
        if ahead:
            self.cache.rollback(ahead)
        return self.log.held(self.cache.offset)

    def cached_tokens(self) -> list[int]:
        """The tokens the target's cache holds now (a prefix of `history`)."""
        return self.history[: self.cache.offset]

    def run(self, prompt: Sequence[int], budget: int) -> Iterator[tuple[int, bool, tuple | None]]:
        """Prefill, then rounds until `budget` >= 1 tokens were produced (the caller stops
        earlier at an end-of-sequence token). Yields (token, came from the draft, its
        log-probability record or None)."""
        for token, from_draft in self._tokens(prompt, budget):
            yield token, from_draft, self.sampler.records.next()

    def _tokens(self, prompt: Sequence[int], budget: int) -> Iterator[tuple[int, bool]]:
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
