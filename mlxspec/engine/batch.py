"""Continuous batching with speculative decoding inside the batch.

Sequences (rows) enter and leave a running batch between steps. A row enters after its
prompt is prefilled alone (from the prompt cache where it can; the choices of one request
after one prefill of the prompt they share, `choices`) and leaves when it ends,
is cancelled, or reaches its budget; its cache goes back to the prompt cache. Each step
feeds every row the same number of tokens through one target pass over a ragged batch
cache (`mlxspec.models.batch_cache`):

- plain step: every row's newest token, one new token per row;
- speculative step: one round (`round.speculative_round`, the one a single sequence runs
  too) with up to k drafted tokens per row (each row its own length: its budget, its
  drafter's outlook, speculation off for it).

`BatchCost` picks k per step from measured step times at the current batch size: the
more rows, the less drafting pays, and at some size it stops paying. (A session whose
`draft_policy` is not "cost" drafts its `num_draft_tokens` every step.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import mlx.core as mx

from ..drafts import DraftKind, batch_drafter
from ..errors import InputError, InputTypeError
from ..models import KVQuantization, Model
from ..models.batch_cache import BatchCache
from ..structured import Constraint
from ..text import Tokenizer
from .batch_policy import BatchCost
from .batch_row import Emit, Row
from .choices import choice_seed
from .decode import Taps, default_chunk_size, forward, prefill
from .logprobs import TokenLogprob
from .options import GenerationOptions
from .policy import Timings
from .prompt_cache import PromptCache
from .request import Prompt, Request
from .round import speculative_round
from .sampling import SamplingParams
from .speculative import check_finite
from .stats import GenerationStats, GenerationStep


class Owner(Protocol):
    """What a batch reads of the session that owns it (`Session.open_batch`)."""

    target: Model
    draft: DraftKind | None
    tokenizer: Tokenizer | None
    k_max: int
    kv: KVQuantization | None
    draft_policy: str
    prompt_cache: PromptCache

    def starting_cache(self, ids: list[int], reuse: bool,
                       features: bool = False) -> tuple[list, int, mx.array | None]: ...

    def timings(self, params: SamplingParams) -> Timings: ...

    def acceptance(self, params: SamplingParams, seed: int | None) -> dict: ...

    def constraint(self, options: GenerationOptions) -> Constraint | None: ...

    def request(self, prompt: Prompt, options: GenerationOptions | None = None, **values: Any) -> Request: ...


class Batch:
    """The running batch of one session (its target, draft, calibration, prompt cache)."""

    def __init__(self, session: Owner) -> None:
        self.session = session
        self.target = session.target
        if not self.target.batches:
            raise InputError(f"this {self.target.args.model_type} target runs through mlx-lm, one sequence at a time: "
                             "batched decoding (batch_generate, serve) needs a model of mlxspec's own port")
        self.chunk = default_chunk_size(self.target)
        self.cache = BatchCache(len(self.target.layers), self.target.args.sliding_window)
        draft = session.draft
        self.drafter = None if draft is None else batch_drafter(draft, self.target, session.k_max, self.chunk, session.kv)
        self.rows: list[Row] = []
        self.cost: BatchCost | None = None
        self.steps = 0
        self.prefilled = 0  # prompt tokens run through the target (not taken from a cache)

    @property
    def features(self) -> Taps:
        """Which of the target's hidden states the drafter reads (None: none)."""
        return None if self.drafter is None else self.drafter.feature_layers

    @property
    def drafting(self) -> bool:
        """Whether this batch can speculate (its session's draft batches)."""
        return self.drafter is not None

    def add(self, row: Row, *choices: Row) -> None:
        """Prefill a row alone, draw its first token and let it join the batch. `choices`, the
        same request's other choices (the same prompt), join from that one prefill: each adds
        a copy of its cache and draws its first token from its logits with its own random
        stream (their stats count the whole prompt as cached)."""
        rows, ids = [row, *choices], row.prompt
        assert all(other.prompt == ids for other in choices), "the choices of one request share its prompt"
        cache, reused, prior = self.session.starting_cache(ids, row.prompt_cache, self.features is not None)
        start = time.perf_counter()
        logits, hidden = prefill(self.target, ids[reused:], cache, self.chunk, self.features)
        if prior is not None:  # the reused prefix's, kept with its cache
            hidden = mx.concatenate([prior, hidden], axis=1)
        check_finite(logits, "the target")
        self.prefilled += len(ids) - reused
        joined = len(self.rows)
        try:
            for i, each in enumerate(rows):
                self._join(each, logits, hidden, cache, reused if i == 0 else len(ids), start)
        except BaseException:  # the batch stays as it was
            self.cache.keep(list(range(joined)))
            if self.drafter is not None:
                self.drafter.keep(list(range(joined)))
            self.rows = self.rows[:joined]
            raise
        for each in rows:
            each.push([(each.last, False)])
        self.drop_finished()

    def _join(self, row: Row, logits: mx.array, hidden: mx.array | None, cache: list, cached: int,
              start: float) -> None:
        """A row whose prompt `cache` holds (its last logits `logits`) draws its first token and
        becomes the batch's last row (the cache is copied into the batch's)."""
        ids = row.prompt
        row.sampler.added(ids)
        first = row.sampler.draw(logits).item()
        row.sampler.added([first])
        row.stats.prompt_tokens, row.stats.prompt_cached_tokens = len(ids), cached
        row.stats.prompt_time = time.perf_counter() - start
        self.cache.add(cache)
        if self.drafter is not None:
            self.drafter.add(ids, hidden, row.sampler.params.greedy)
        if hidden is not None:
            row.features.add(hidden)
        row.last = first
        self.rows.append(row)

    def drop_finished(self) -> None:
        """Rows that ended or were cancelled leave; their caches go to the prompt cache."""
        done = [b for b, row in enumerate(self.rows) if row.done]
        if not done:
            return
        for b in done:
            caches, row = self.cache.row(b, self.session.k_max), self.rows[b]
            if caches is not None and row.prompt_cache:
                held = self.cache.layout.offsets[b]  # the text through its newest position
                self.session.prompt_cache.put(row.sampler.history[:held], caches, row.features.held(held))
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
        logits, hidden = forward(self.target, mx.array([[row.last] for row in self.rows]), self.cache.layers,
                                 self.features)
        logits = logits[:, -1]
        drawn = mx.concatenate([row.sampler.draw(logits[b : b + 1]) for b, row in enumerate(self.rows)])
        for b, (row, token) in enumerate(zip(self.rows, drawn.tolist())):
            if self.drafter is not None:
                self.drafter.extend(b, [row.last], None if hidden is None else hidden[b : b + 1])
            if hidden is not None:
                row.features.add(hidden[b : b + 1])
            row.take_plain(token)
        return 0

    def _speculate(self, ks: list[int]) -> int:
        """One round for every row (see `speculative_round`); each row keeps what it
        accepted. Returns the longest proposal (the step's k)."""
        done = speculative_round(self.target, self.cache, self.drafter, self.rows, ks, self.features)
        for b, row in enumerate(self.rows):
            row.take_round(done.raw[b : b + 1], done.lengths[b], done.accepted[b], done.drafted[b], done.nexts[b])
            if done.hidden is not None:
                row.features.add(done.hidden[b : b + 1, : done.accepted[b] + 1])
        return max(done.lengths)


def make_row(session: Owner, request: Request, emit: Emit, choice: int = 0) -> Row:
    """A batch row for a checked request (`Session.request`): its choice `choice` (0..n-1),
    which draws from its own seed (`choice_seed`)."""
    drafting = request.speculative and session.draft is not None
    return Row(request.ids, request.params, request.budget, session.tokenizer, session.target.args.vocab_size,
               emit, seed=choice_seed(request.seed, choice), stops=request.stops, logprobs=request.logprobs,
               k_max=request.k_max if drafting else 0,
               estimates=session.acceptance(request.params, request.seed) if drafting else None,
               drafting=drafting, prompt_cache=request.prompt_cache and choice == 0,
               constraint=session.constraint(request.options))


@dataclass
class Completion:
    """One prompt's result (one choice of it) from `batch_generate`."""

    text: str
    tokens: list[int]
    stats: GenerationStats | None
    logprobs: list[TokenLogprob | None] = field(default_factory=list)


def batch_generate(session: Owner, prompts: Sequence[Prompt], options: GenerationOptions | None = None,
                   **values: Any) -> list[Completion]:
    """Every prompt decoded together in one batch (options as in `Session.request`, the same
    for every prompt); results in the order of `prompts`, each prompt's `n` choices in a row
    (prompt i's choice j at i * n + j), sharing its prefill (see `choices`)."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise InputTypeError(f"prompts must be a list of prompts, got {type(prompts).__name__}")
    if not prompts:
        raise InputError("prompts is empty")
    requests = [session.request(p, options, **values) for p in prompts]  # every one checked before any work
    n = requests[0].options.n
    steps: list[list[GenerationStep]] = [[] for _ in range(len(prompts) * n)]
    batch = Batch(session)
    for i, request in enumerate(requests):
        if request.budget > 0:
            batch.add(*(make_row(session, request, steps[i * n + j].append, j) for j in range(n)))
    batch.run()
    return [Completion("".join(s.text for s in out), [s.token for s in out], out[-1].stats if out else None,
                       [s.logprob for s in out]) for out in steps]
