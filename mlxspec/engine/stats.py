"""What a generation reports: per-step records and running statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .logprobs import TokenLogprob


@dataclass
class GenerationStats:
    """Running statistics of one generation (times in seconds, memory in GB)."""

    prompt_tokens: int = 0
    prompt_cached_tokens: int = 0  # of `prompt_tokens`, how many came from the prompt cache (not prefilled)
    prompt_time: float = 0.0
    generation_tokens: int = 0
    generation_time: float = 0.0
    peak_memory_gb: float = 0.0
    finish_reason: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def prompt_tps(self) -> float:
        """Prompt tokens prefilled per second (cached ones were not)."""
        return (self.prompt_tokens - self.prompt_cached_tokens) / self.prompt_time if self.prompt_time else 0.0

    @property
    def generation_tps(self) -> float:
        """Generated tokens per second, timed from the end of the prompt's prefill."""
        return self.generation_tokens / self.generation_time if self.generation_time else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Alias of `generation_tps`."""
        return self.generation_tps

    def record(self, k: int, accepted: int) -> None:
        """A round drafting k tokens ran (plain generation keeps no round counts)."""

    def as_dict(self) -> dict:
        """Plain dictionary for `--json` output."""
        out = asdict(self)
        extra = out.pop("extra")
        out.update(prompt_tps=self.prompt_tps, generation_tps=self.generation_tps,
                   tokens_per_second=self.tokens_per_second, **extra)
        return out


@dataclass
class SpeculativeStats(GenerationStats):
    """Generation stats plus what speculation did."""

    draft_mode: str = ""  # which kind of drafter ran (prompt lookup, draft model, ...)
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
        """Tokens per round (one target pass each), the prefill's first token left out."""
        return (self.generation_tokens - 1) / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update(acceptance_rate=self.acceptance_rate, tokens_per_round=self.tokens_per_round)
        return out

    def record(self, k: int, accepted: int) -> None:
        """Count a round that drafted k tokens (0: a plain step) and accepted the first `accepted`."""
        self.rounds += 1
        self.k_counts[k] = self.k_counts.get(k, 0) + 1
        if k == 0:
            return
        self.drafted += k
        self.accepted += accepted
        while len(self.drafted_per_position) < k:
            self.drafted_per_position.append(0)
            self.accepted_per_position.append(0)
        for i in range(k):
            self.drafted_per_position[i] += 1
            self.accepted_per_position[i] += int(i < accepted)


@dataclass
class GenerationStep:
    """One generated token: its id, the text it completed, the stats so far, whether the
    draft proposed it, (when asked for) its log-probability record, and on the last step
    only, why the generation ended (`stats` is shared by every step of one generation and
    updated as it runs: a step read later than it was made sees later stats)."""

    token: int
    text: str
    stats: GenerationStats
    from_draft: bool = False
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None
