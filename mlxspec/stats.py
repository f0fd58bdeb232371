"""What a generation reports: per-step records and running statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    """Running statistics of one generation (times in seconds, memory in GB)."""

    prompt_tokens: int = 0
    prompt_time: float = 0.0
    generation_tokens: int = 0
    generation_time: float = 0.0
    peak_memory_gb: float = 0.0
    finish_reason: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def prompt_tps(self) -> float:
        """Prompt (prefill) tokens per second."""
        return self.prompt_tokens / self.prompt_time if self.prompt_time else 0.0

    @property
    def generation_tps(self) -> float:
        """Generated tokens per second, timed from the end of the prompt's prefill."""
        return self.generation_tokens / self.generation_time if self.generation_time else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Alias of `generation_tps`."""
        return self.generation_tps

    def as_dict(self) -> dict:
        """Plain dictionary for `--json` output."""
        out = asdict(self)
        extra = out.pop("extra")
        out.update(prompt_tps=self.prompt_tps, generation_tps=self.generation_tps,
                   tokens_per_second=self.tokens_per_second, **extra)
        return out


@dataclass
class GenerationStep:
    """One generated token: its id, the text it completed, and the stats so far."""

    token: int
    text: str
    stats: GenerationStats
    from_draft: bool = False
