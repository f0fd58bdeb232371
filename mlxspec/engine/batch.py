"""Continuous batching with speculative decoding inside the batch.

Sequences (rows) enter and leave a running batch between steps. A row enters after its
prompt is prefilled alone (from the prompt cache where it can) and leaves when it ends,
is cancelled, or reaches its budget; its cache goes back to the prompt cache. Each step
feeds every row the same number of tokens through one target pass over a ragged batch
cache (`mlxspec.models.batch_cache`):

- plain step: every row's newest token, one new token per row;
- speculative step: the batch's drafter proposes up to k tokens per row (each row its own
  length: its budget, its drafter's outlook, speculation off for it), the target scores
  every row's newest token and proposal in one pass (shorter rows padded: the padding
  comes after their tokens, so causal attention keeps it out of their logits), each row
  is verified by exact rejection sampling with its own settings and random stream, and
  each row rolls back what it did not keep.

`BatchCost` picks k per step from measured step times at the current batch size: the
more rows, the less drafting pays, and at some size it stops paying. (A session whose
`draft_policy` is not "cost" drafts its `num_draft_tokens` every step.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import mlx.core as mx

from ..errors import InputError, InputTypeError
from ..models.batch_cache import BatchCache
from .batch_policy import BatchCost
from .batch_row import Emit, Row
from .decode import Taps, default_chunk_size, forward, prefill
from .logprobs import TokenLogprob
from .options import GenerationOptions
from .request import Prompt, Request
from .speculative import check_finite
from .stats import GenerationStats, GenerationStep


class Batch:
    """The running batch of one session (its target, draft, calibration, prompt cache)."""

    def __init__(self, session: object) -> None:
        self.session = session
        self.target = session.target
        self.chunk = default_chunk_size(self.target)
        self.cache = BatchCache(len(self.target.layers), self.target.args.sliding_window)
        draft = session.draft
        self.drafter = draft.batch_drafter(self.target, self.chunk) if draft is not None and draft.batches else None
        self.rows: list[Row] = []
        self.cost: BatchCost | None = None
        self.steps = 0

    @property
    def features(self) -> Taps:
        """Which of the target's hidden states the drafter reads (None: none)."""
        return None if self.drafter is None else self.drafter.feature_layers

    @property
    def drafting(self) -> bool:
        """Whether this batch can speculate (its session's draft batches)."""
        return self.drafter is not None

    def add(self, row: Row) -> None:
        """Prefill a row alone, draw its first token and let it join the batch."""
        ids = row.prompt
        cache, reused = self.session.starting_cache(ids, row.prompt_cache and self.features is None)
        start = time.perf_counter()
        logits, hidden = prefill(self.target, ids[reused:], cache, self.chunk, self.features)
        check_finite(logits, "the target")
        row.sampler.added(ids)
        first = row.sampler.draw(logits).item()
        row.sampler.added([first])
        row.stats.prompt_tokens, row.stats.prompt_cached_tokens = len(ids), reused
        row.stats.prompt_time = time.perf_counter() - start
        self.cache.add(cache)
        if self.drafter is not None:
            try:
                self.drafter.add(ids, hidden)
            except BaseException:  # the batch stays as it was
                self.cache.keep(list(range(len(self.rows))))
                raise
        row.last = first
        self.rows.append(row)
        row.push([(first, False)])
        self.drop_finished()

    def drop_finished(self) -> None:
        """Rows that ended or were cancelled leave; full-attention caches go to the prompt cache."""
        done = [b for b, row in enumerate(self.rows) if row.done]
        if not done:
            return
        for b in done:
            caches, row = self.cache.row(b), self.rows[b]
            if caches is not None and row.prompt_cache:
                held = self.cache.layout.lengths[b]
                self.session.prompt_cache.put(row.sampler.history[:held], caches)
            row.finish()
        keep = [b for b in range(len(self.rows)) if b not in done]
        self.cache.keep(keep)
        if self.drafter is not None:
            self.drafter.keep(keep)
        self.rows = [self.rows[b] for b in keep]

    def step(self) -> None:
        """One step for every row (plain or speculative, as the policy says)."""
        self.drop_finished()
        if not self.rows:
            return
        start = time.perf_counter()
        limits, estimates = self._outlooks()
        if any(limits) and self.cost is None and self.session.draft_policy == "cost":
            self.cost = BatchCost(self.session.timings(self.rows[0].sampler.params), self.session.k_max)
        k = 0 if not any(limits) else self.cost.next_k(limits, estimates) if self.cost else self.session.k_max
        ks = [min(k, limit) for limit in limits]
        drafted = self._speculate(ks) if max(ks) else self._plain()
        if self.cost is not None:
            self.cost.observe(len(self.rows), drafted, time.perf_counter() - start)
        self.steps += 1
        self.drop_finished()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Step until every row ended (or `until` says stop)."""
        while self.rows and not (until and until()):
            self.step()

    def _outlooks(self) -> tuple[list[int], list]:
        """Per row: how many tokens it may draft now, and the acceptance estimate that applies."""
        limits, estimates = [], []
        for b, row in enumerate(self.rows):
            if self.drafter is None or not row.speculative or row.left <= 1:
                limits.append(0)
                estimates.append(None)
                continue
            outlook = self.drafter.outlook(b, row.last)
            limits.append(max(0, min(row.k_max, outlook.most, row.left - 1)))
            estimates.append(row.estimate(outlook))
        return limits, estimates

    def _plain(self) -> int:
        """Every row's newest token in, one new token per row out."""
        self.cache.layout.begin(1)
        logits, hidden = forward(self.target, mx.array([[row.last] for row in self.rows]), self.cache.layers,
                                 self.features)
        logits = logits[:, -1]
        drawn = mx.concatenate([row.sampler.draw(logits[b : b + 1]) for b, row in enumerate(self.rows)])
        for b, (row, token) in enumerate(zip(self.rows, drawn.tolist())):
            if self.drafter is not None:
                self.drafter.extend(b, [row.last], None if hidden is None else hidden[b : b + 1])
            row.take_plain(token)
        return 0

    def _speculate(self, ks: list[int]) -> int:
        """Draft, verify every row in one pass, keep what each row accepted. Returns the
        longest proposal (the step's k)."""
        for row in self.rows:
            row.sampler.start_round()
        proposals = self.drafter.propose([row.last for row in self.rows], ks, [row.pick for row in self.rows])
        lengths = [p.tokens.shape[1] for p in proposals]
        width = max(lengths)
        fed = [mx.concatenate([mx.array([[row.last]]), p.tokens.astype(mx.int32),
                               mx.zeros((1, width - n), mx.int32)], axis=1)
               for row, p, n in zip(self.rows, proposals, lengths)]
        self.cache.layout.begin(width + 1)
        raw, hidden = forward(self.target, mx.concatenate(fed, axis=0), self.cache.layers, self.features)
        results = []
        for b, (row, p, n) in enumerate(zip(self.rows, proposals, lengths)):
            if n:
                count, nxt = row.sampler.verify(raw[b : b + 1, : n + 1], p)
            else:
                count, nxt = mx.zeros((1,), mx.int32), row.sampler.draw(raw[b : b + 1, 0])
            results.append(mx.concatenate([count.astype(mx.int32), nxt.astype(mx.int32), p.tokens[0].astype(mx.int32)]))
        mx.eval(results)
        values = [r.tolist() for r in results]
        accepted = [v[0] for v in values]
        self.cache.layout.rollback([width - a for a in accepted])
        self.drafter.settle(accepted, [v[2:] for v in values], hidden)
        for b, (row, v, n) in enumerate(zip(self.rows, values, lengths)):
            row.take_round(raw[b : b + 1], n, v[0], v[2:], v[1])
        return width


def make_row(session: object, request: Request, emit: Emit) -> Row:
    """A batch row for a checked request (`Session.request`)."""
    drafting = request.speculative and session.draft is not None
    return Row(request.ids, request.params, request.budget, session.tokenizer, session.target.args.vocab_size,
               emit, seed=request.seed, stops=request.stops, logprobs=request.logprobs,
               k_max=request.k_max if drafting else 0,
               estimates=session.acceptance(request.params, request.seed) if drafting else None,
               drafting=drafting, prompt_cache=request.prompt_cache)


@dataclass
class Completion:
    """One prompt's result from `batch_generate`."""

    text: str
    tokens: list[int]
    stats: GenerationStats | None
    logprobs: list[TokenLogprob | None] = field(default_factory=list)


def batch_generate(session: object, prompts: Sequence[Prompt], options: GenerationOptions | None = None,
                   **values: Any) -> list[Completion]:
    """Every prompt decoded together in one batch (options as in `Session.request`, the same
    for every prompt); results in the order of `prompts`."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise InputTypeError(f"prompts must be a list of prompts, got {type(prompts).__name__}")
    if not prompts:
        raise InputError("prompts is empty")
    requests = [session.request(p, options, **values) for p in prompts]  # every one checked before any work
    steps: list[list[GenerationStep]] = [[] for _ in prompts]
    batch = Batch(session)
    for request, out in zip(requests, steps):
        if request.budget > 0:
            batch.add(make_row(session, request, out.append))
    batch.run()
    return [Completion("".join(s.text for s in out), [s.token for s in out], out[-1].stats if out else None,
                       [s.logprob for s in out]) for out in steps]
