"""A session: what outlives one request. An app or a server keeps one and sends it requests.

It holds the target and its tokenizer, the draft, the calibrated round times (per kind of
sampling) and the acceptance the draft has had so far (per sampling setting), so that a
new request starts from what earlier ones measured. A request with a seed starts from the
prior instead: the draft lengths, and with them the text, then depend only on the request
and this device's calibration, never on what ran before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import mlx.core as mx

from ..drafts import DRAFT_TYPES, Draft, NGramDraft, check_draft, make_drafter
from ..errors import InputError, InputTypeError
from ..models import Model, set_weight_first_rows
from ..paths import cache_dir as default_cache_dir
from ..text import Tokenizer
from ..validate import is_int
from .calibrate import Progress, calibrate, sampling_kind
from .decode import default_chunk_size
from .policy import AcceptanceEstimate, CostModel, DraftPolicy, FixedK, Heuristic, Plain, Timings
from .request import Prompt, check_request, prompt_ids, steps, token_budget
from .sampling import RandomKeys, SamplingParams
from .speculative import Generation
from .stats import GenerationStep

DRAFT_POLICIES = ("cost", "fixed", "heuristic")


def check_parts(target: object, tokenizer: object, draft: object) -> None:
    """Loaded objects, not paths: say how to get them."""
    if not isinstance(target, Model):
        raise InputTypeError(f"the target must be a loaded Model (model, tokenizer = mlxspec.load(path)), "
                             f"got {type(target).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise InputTypeError(f"tokenizer must be an mlxspec Tokenizer (mlxspec.load returns one), "
                             f"got {type(tokenizer).__name__}")
    if draft is not None and not isinstance(draft, DRAFT_TYPES):
        raise InputTypeError(f"draft must be a loaded draft (mlxspec.load_draft(path, model, tokenizer)), "
                             f"\"ngram\" or an NGramDraft, got {type(draft).__name__}")


def as_draft(draft: object) -> object:
    """A draft as given, with the name "ngram" standing for prompt lookup's default settings."""
    if isinstance(draft, str):
        if draft != "ngram":
            raise InputTypeError(f"draft must be a loaded draft (mlxspec.load_draft(path, model, tokenizer)) or "
                                 f"\"ngram\" (prompt lookup), got the string {draft!r}")
        return NGramDraft()
    return draft


class Calibration:
    """Round times for one pair, measured on first use per kind of sampling (or read from
    the cache in `cache_dir`) and kept for the session's life."""

    def __init__(self, cache_dir: Path | None = None, recalibrate: bool = False,
                 progress: Progress | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.recalibrate, self.progress = recalibrate, progress
        self._timings: dict[str, Timings] = {}

    def timings(self, target: Model, draft: Draft, k_max: int, params: SamplingParams) -> Timings:
        """The round times for `params`' kind of sampling, the target set to the
        multiplication order they were measured in."""
        kind = sampling_kind(params)
        if kind not in self._timings:
            self._timings[kind] = calibrate(target, draft, k_max, params, cache_dir=self.cache_dir,
                                            recalibrate=self.recalibrate, progress=self.progress)
        timings = self._timings[kind]
        set_weight_first_rows(target, timings.weight_first_rows)
        return timings


class Session:
    """Generation with one target (and optionally one draft) across many requests.

    `draft_policy` chooses the draft length per round: "cost" (the calibrated cost model,
    which may also decode plainly when drafting does not pay), "fixed" (always
    `num_draft_tokens`) or "heuristic" (transformers' +2/-1 schedule). `draft` is a loaded
    draft, "ngram" or an `NGramDraft` (prompt lookup: the text drafts itself)."""

    def __init__(self, target: Model, tokenizer: Tokenizer | None = None, draft: Draft | str | None = None, *,
                 num_draft_tokens: int = 6, draft_policy: str = "cost",
                 calibration: Calibration | None = None) -> None:
        draft = as_draft(draft)
        check_parts(target, tokenizer, draft)
        if draft_policy not in DRAFT_POLICIES:
            raise InputError(f"draft_policy must be one of {', '.join(DRAFT_POLICIES)}, got {draft_policy!r}")
        if not is_int(num_draft_tokens):
            raise InputTypeError(f"num_draft_tokens must be an integer, got {num_draft_tokens!r}")
        if draft is not None:
            check_draft(target, draft, num_draft_tokens)
        self.target, self.tokenizer, self.draft = target, tokenizer, draft
        self.k_max, self.draft_policy = num_draft_tokens, draft_policy
        if calibration is not None and not callable(getattr(calibration, "timings", None)):
            raise InputTypeError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        self.calibration = calibration or Calibration()
        self._acceptance: dict[SamplingParams, dict[str, AcceptanceEstimate]] = {}

    def timings(self, params: SamplingParams) -> Timings:
        """The calibrated round times for these sampling settings (measured on first use)."""
        if self.draft is None:
            raise InputError("a session without a draft has nothing to calibrate")
        return self.calibration.timings(self.target, self.draft, self.k_max, params)

    def policy(self, params: SamplingParams, seed: int | None) -> DraftPolicy:
        """The draft-length policy for one request."""
        if self.draft_policy == "fixed":
            return FixedK(self.k_max)
        if self.draft_policy == "heuristic":
            return Heuristic(self.k_max)
        estimates = {} if seed is not None else self._acceptance.setdefault(params, {})
        return CostModel(self.timings(params), estimates, self.k_max)

    def stream(self, prompt: Prompt, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int = 0, seed: int | None = None, chat: bool = False, prefill_chunk: int | None = None,
               speculative: bool = True) -> Iterator[GenerationStep]:
        """Generate, one `GenerationStep` per token; the request is checked before this returns.

        The prompt is text (`chat` wraps it in the model's template), chat messages or token
        ids. Decodes speculatively when the session has a draft (unless `speculative` is
        False). Stops at an end-of-sequence token, after `max_tokens`, or at the model's
        context length; the last step's `stats.finish_reason` says which ("stop" or "length").
        Without a tokenizer, steps carry ids only (empty text, no end-of-sequence stop)."""
        params = SamplingParams(temperature, top_p, top_k)
        check_request(max_tokens, seed, prefill_chunk)
        ids = prompt_ids(self.tokenizer, prompt, chat, context=self.target.args.max_position_embeddings)
        budget = token_budget(self.target, ids, max_tokens)
        chunk = prefill_chunk or default_chunk_size(self.target)
        drafting = speculative and self.draft is not None and budget > 0  # nothing to calibrate for 0 tokens
        policy = self.policy(params, seed) if drafting else Plain()
        drafter = make_drafter(self.draft, self.target, self.k_max, chunk, params.greedy) if drafting else None
        generation = Generation(self.target, drafter, policy, params, RandomKeys(seed), chunk)
        generation.stats.prompt_tokens = len(ids)
        return self._steps(generation, ids, budget)

    def _steps(self, generation: Generation, ids: list[int], budget: int) -> Iterator[GenerationStep]:
        if budget == 0:
            return
        mx.reset_peak_memory()
        yield from steps(generation.run(ids, budget), self.tokenizer, generation.stats, budget)

    def generate(self, prompt: Prompt, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int | None = None, chat: bool = False, prefill_chunk: int | None = None,
                 speculative: bool = True) -> str:
        """The whole completion text (see `stream`)."""
        return "".join(step.text for step in self.stream(
            prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
            chat=chat, prefill_chunk=prefill_chunk, speculative=speculative))
