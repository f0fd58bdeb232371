"""One sequence in a running batch: its prompt and budget, its draws (a `Sampler`), its
text (a `StepText`: end-of-sequence, stop strings, budget), its stats and acceptance
estimates, and where its steps go (`emit`, called on the batch's thread)."""

from __future__ import annotations

from typing import Callable

import mlx.core as mx

from ..drafts.protocol import Outlook
from ..structured import Constraint
from ..text import Tokenizer
from .policy import AcceptanceEstimate
from .prompt_cache import FeatureLog
from .request import StepText
from .sampler import Sampler
from .sampling import RandomKeys, SamplingParams
from .stats import GenerationStats, GenerationStep, SpeculativeStats

Emit = Callable[[GenerationStep], None]


class Row:
    """A request in a batch. `estimates` are the acceptance estimates it shares with the
    session's other requests of the same settings (a fresh dict: its own); `k_max` caps
    its drafts, 0 switches speculation off for it; `constraint` holds its text to a format."""

    def __init__(self, prompt: list[int], params: SamplingParams, budget: int, tokenizer: Tokenizer | None,
                 vocab: int, emit: Emit, *, seed: int | None = None, stops: list[str] | None = None,
                 logprobs: int | None = None, k_max: int = 0, estimates: dict | None = None,
                 drafting: bool = False, prompt_cache: bool = True, constraint: Constraint | None = None) -> None:
        self.prompt, self.budget, self.emit, self.k_max = prompt, budget, emit, k_max
        self.prompt_cache = prompt_cache
        self.sampler = Sampler(params, RandomKeys(seed), vocab, logprobs, constraint)
        self.stats: GenerationStats = (SpeculativeStats(draft_mode="batched", accepted_per_position=[0] * k_max,
                                                        drafted_per_position=[0] * k_max)
                                       if drafting else GenerationStats())
        self.text = StepText(tokenizer, self.stats, budget, stops or [])
        self.estimates = estimates if estimates is not None else {}
        self.last: int | None = None
        self.cancelled = False
        self.finished = False
        self.on_finish: Callable[[], None] | None = None
        self.features = FeatureLog()  # the target's hidden states a feature draft read, for the prompt cache
        self._outlook: Outlook | None = None

    @property
    def speculative(self) -> bool:
        return self.k_max > 0

    @property
    def done(self) -> bool:
        """Ended (end of sequence, stop string, budget) or cancelled."""
        return self.text.done or self.cancelled

    @property
    def left(self) -> int:
        """Tokens it may still produce."""
        return self.budget - self.stats.generation_tokens

    def cancel(self) -> None:
        """Leave the batch at the next step (safe from any thread)."""
        self.cancelled = True

    def finish(self) -> None:
        """Called once as it leaves the batch (or never joins it)."""
        self.finished = True
        if self.on_finish is not None:
            self.on_finish()

    def estimate(self, outlook: Outlook) -> AcceptanceEstimate:
        """The acceptance estimate for this kind of proposal (from its prior when new)."""
        self._outlook = outlook
        if outlook.key not in self.estimates:
            self.estimates[outlook.key] = AcceptanceEstimate(prior=outlook.prior)
        return self.estimates[outlook.key]

    def pick(self, logits: mx.array, support: mx.array | None = None,
             target_ids: bool = False) -> tuple[mx.array, mx.array | None]:
        return self.sampler.pick(logits, support, target_ids)

    def push(self, tokens: list[tuple[int, bool]]) -> None:
        """Emit steps for new tokens until the row ends."""
        for token, from_draft in tokens:
            if self.text.done:
                return
            self.emit(self.text.add(token, from_draft, self.sampler.records.next()))

    def take_plain(self, token: int) -> None:
        """A plain step gave this token."""
        self.sampler.added([token])
        self.stats.record(0, 0)
        self.last = token
        self.push([(token, False)])

    def take_round(self, raw: mx.array, drafted: int, accepted: int, tokens: list[int], nxt: int) -> None:
        """A speculative step: `drafted` tokens proposed (`tokens`), the first `accepted` kept,
        then `nxt`; `raw` [1, n, vocab] the target's logits over this row."""
        kept = tokens[:accepted] + [nxt]
        if drafted:
            self.sampler.settle(raw, kept)
            self.estimates[self._outlook.key].update(accepted, drafted)
        else:
            self.sampler.added(kept)
        self.stats.record(drafted, accepted)
        self.last = nxt
        self.push([(t, True) for t in tokens[:accepted]] + [(nxt, False)])
