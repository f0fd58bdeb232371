"""A session: what outlives one request. An app or a server keeps one and sends it requests.

It holds the target and its tokenizer, the draft, the calibrated round times (per kind of
sampling) and the acceptance the draft has had so far (per sampling setting), so that a
new request starts from what earlier ones measured. A request with a seed starts from the
prior instead: the draft lengths, and with them the text, then depend only on the request
and this device's calibration, never on what ran before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import mlx.core as mx

from ..drafts import Draft, DraftKind, as_draft, check_draft_length, make_drafter
from ..errors import InputError, InputTypeError
from ..models import KVQuantization, Model, is_model, kv_keyword, kv_quantization, set_weight_first_rows
from ..paths import cache_dir as default_cache_dir
from ..structured import Constraint
from ..text import Message, Tokenizer
from ..text.chat import as_messages
from ..validate import is_int
from .batch import Batch, Completion, batch_generate, make_row
from .batch_row import Emit, Row
from .calibrate import Progress, calibrate, sampling_kind
from .decode import default_chunk_size
from .policy import AcceptanceEstimate, CostModel, DraftPolicy, FixedK, Heuristic, Plain, Timings
from .prompt_cache import DEFAULT_ENTRIES, PromptCache
from .options import GenerationOptions
from .request import Prompt, Request, check_prefill_chunk, prompt_ids, steps, token_budget
from .sampling import RandomKeys, SamplingParams
from .speculative import Generation
from .stats import GenerationStep

DRAFT_POLICIES = ("cost", "fixed", "heuristic")


def check_parts(target: object, tokenizer: object) -> None:
    """Loaded objects, not paths: say how to get them."""
    if not is_model(target):
        raise InputTypeError(f"the target must be a loaded Model (model, tokenizer = mlxspec.load(path)), "
                             f"got {type(target).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise InputTypeError(f"tokenizer must be an mlxspec Tokenizer (mlxspec.load returns one), "
                             f"got {type(tokenizer).__name__}")


class Calibration:
    """Round times for one pair, measured on first use per kind of sampling (or read from
    the cache in `cache_dir`) and kept for the session's life."""

    def __init__(self, cache_dir: Path | None = None, recalibrate: bool = False,
                 progress: Progress | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.recalibrate, self.progress = recalibrate, progress
        self._timings: dict[tuple[str, KVQuantization | None], Timings] = {}

    def timings(self, target: Model, draft: DraftKind, k_max: int, params: SamplingParams,
                kv: KVQuantization | None = None) -> Timings:
        """The round times for `params`' kind of sampling (over caches quantized as `kv`
        says), the target set to the multiplication order they were measured in."""
        kind = (sampling_kind(params), kv)
        if kind not in self._timings:
            self._timings[kind] = calibrate(target, draft, k_max, params, cache_dir=self.cache_dir,
                                            recalibrate=self.recalibrate, progress=self.progress, kv=kv)
        timings = self._timings[kind]
        set_weight_first_rows(target, timings.weight_first_rows)
        return timings


class Session:
    """Generation with one target (and optionally one draft) across many requests.

    `draft_policy` chooses the draft length per round: "cost" (the calibrated cost model,
    which may also decode plainly when drafting does not pay), "fixed" (always
    `num_draft_tokens`) or "heuristic" (transformers' +2/-1 schedule). `draft` is a loaded
    draft (`mlxspec.load_draft`), any draft kind, or the name of one made by name ("ngram":
    prompt lookup, the text drafts itself).

    `kv_bits` (4 or 8; None: full precision) quantizes the key/value caches of the target and
    of the draft, in groups of `kv_group_size` (32, 64 or 128) along head_dim, as mlx-lm's
    `generate(..., kv_bits=...)` does (from the first token here): about 0.28 of the memory at 4
    bits, and they still roll back. `InputError` when a value or the models' head_dim rules it out."""

    def __init__(self, target: Model, tokenizer: Tokenizer | None = None, draft: Draft | str | None = None, *,
                 num_draft_tokens: int = 6, draft_policy: str = "cost",
                 calibration: Calibration | None = None, prompt_cache_entries: int = DEFAULT_ENTRIES,
                 kv_bits: int | None = None, kv_group_size: int = 64) -> None:
        check_parts(target, tokenizer)
        self.kv: KVQuantization | None = kv_quantization(kv_bits, kv_group_size)
        if draft_policy not in DRAFT_POLICIES:
            raise InputError(f"draft_policy must be one of {', '.join(DRAFT_POLICIES)}, got {draft_policy!r}")
        if not is_int(num_draft_tokens):
            raise InputTypeError(f"num_draft_tokens must be an integer, got {num_draft_tokens!r}")
        self.draft: DraftKind | None = None if draft is None else as_draft(draft)
        if self.draft is not None:
            check_draft_length(num_draft_tokens)
            self.draft.check(target, num_draft_tokens)
        self.target, self.tokenizer = target, tokenizer
        self.k_max, self.draft_policy = num_draft_tokens, draft_policy
        if calibration is not None and not callable(getattr(calibration, "timings", None)):
            raise InputTypeError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        self.calibration = calibration or Calibration()
        self._acceptance: dict[SamplingParams, dict[str, AcceptanceEstimate]] = {}
        if not is_int(prompt_cache_entries) or prompt_cache_entries < 0:
            raise InputError(f"prompt_cache_entries must be an integer >= 0, got {prompt_cache_entries!r}")
        self.prompt_cache = PromptCache(prompt_cache_entries)
        if self.kv is not None:  # a model the setting rules out says so now, not at the first request
            target.make_cache(kv=self.kv)
            if self.draft is not None:
                make_drafter(self.draft, target, self.k_max, default_chunk_size(target), kv=self.kv)

    def timings(self, params: SamplingParams) -> Timings:
        """The calibrated round times for these sampling settings (measured on first use)."""
        if self.draft is None:
            raise InputError("a session without a draft has nothing to calibrate")
        return self.calibration.timings(self.target, self.draft, self.k_max, params, **kv_keyword(self.kv))

    def policy(self, params: SamplingParams, seed: int | None, k_max: int | None = None) -> DraftPolicy:
        """The draft-length policy for one request (drafting at most `k_max`, default the session's)."""
        k_max = self.k_max if k_max is None else k_max
        if self.draft_policy == "fixed":
            return FixedK(k_max)
        if self.draft_policy == "heuristic":
            return Heuristic(k_max)
        return CostModel(self.timings(params), self.acceptance(params, seed), k_max)

    def acceptance(self, params: SamplingParams, seed: int | None) -> dict[str, AcceptanceEstimate]:
        """The acceptance estimates a request starts from: the session's for these settings,
        or fresh ones for a seeded request (its text then depends on nothing before it)."""
        return {} if seed is not None else self._acceptance.setdefault(params, {})

    def request(self, prompt: Prompt, options: GenerationOptions | None = None, *, chat: bool = False,
                prefill_chunk: int | None = None, speculative: bool = True, num_draft_tokens: int | None = None,
                prompt_cache: bool = True, **values: Any) -> Request:
        """Check a request and tokenize its prompt: what `stream` runs and a batch row is made of.

        The prompt is text (`chat` wraps it in the model's template), chat messages or token
        ids. `options` (a `GenerationOptions`), with any of its fields given by name as
        keywords (`max_tokens=32, temperature=0.7, stop=["\\n"], seed=1, ...`), say how to
        sample and when to stop: at an end-of-sequence token, a stop string (never emitted),
        after `max_tokens`, or at the model's context length. `speculative=False` decodes
        without the draft; `num_draft_tokens` caps this request's drafts (0..the session's
        `num_draft_tokens`; 0 is the same as `speculative=False`). With `prompt_cache` the
        longest prefix shared with a recent request is not prefilled again
        (`stats.prompt_cached_tokens`)."""
        if options is not None and not isinstance(options, GenerationOptions):
            raise InputTypeError(f"options must be a GenerationOptions, got {type(options).__name__}")
        options = (options or GenerationOptions()).with_values(values)
        check_prefill_chunk(prefill_chunk)
        if not isinstance(speculative, bool) or not isinstance(prompt_cache, bool):
            raise InputTypeError("speculative and prompt_cache must be True or False")
        k_max = self.k_max if num_draft_tokens is None else num_draft_tokens
        if not is_int(k_max) or not 0 <= k_max <= self.k_max:
            raise InputError(f"num_draft_tokens must be an integer in 0..{self.k_max} (the session's), "
                             f"got {num_draft_tokens!r}")
        vocab = self.target.args.vocab_size
        if options.logit_bias and options.logit_bias[-1][0] >= vocab:
            raise InputError(f"logit_bias: token id {options.logit_bias[-1][0]} is outside the vocabulary "
                             f"(0..{vocab - 1})")
        ids = prompt_ids(self.tokenizer, prompt, chat, context=self.target.args.max_position_embeddings)
        budget = token_budget(self.target, ids, options.max_tokens)
        return Request(ids, options, budget, prefill_chunk or default_chunk_size(self.target),
                       speculative and self.draft is not None and k_max > 0, prompt_cache, k_max)

    def stream(self, prompt: Prompt, options: GenerationOptions | None = None,
               **values: Any) -> Iterator[GenerationStep]:
        """Generate, one `GenerationStep` per token; the request (as in `request`) is
        checked before this returns. Decodes speculatively when the session has a draft. The
        last step's `stats.finish_reason` says why it ended ("stop" or "length"). Without a
        tokenizer, steps carry ids only."""
        req = self.request(prompt, options, **values)
        if req.options.n > 1:
            raise InputError(f"n={req.options.n} asks for several choices and a stream is one: "
                             "Session.choices (or batch_generate) returns them")
        drafting = req.speculative and req.budget > 0  # nothing to calibrate for 0 tokens
        policy = self.policy(req.params, req.seed, req.k_max) if drafting else Plain()
        drafter = (make_drafter(self.draft, self.target, self.k_max, req.chunk, req.params.greedy, self.kv)
                   if drafting else None)
        features = drafter is not None and drafter.feature_layers is not None
        cache, reused, prior = self.starting_cache(req.ids, req.prompt_cache, features)
        generation = Generation(self.target, drafter, policy, req.params, RandomKeys(req.seed), req.chunk, cache,
                                reused, req.logprobs, self.constraint(req.options), prior)
        generation.stats.prompt_tokens, generation.stats.prompt_cached_tokens = len(req.ids), reused
        return self._steps(generation, req.ids, req.budget, req.stops, req.prompt_cache)

    def constraint(self, options: GenerationOptions) -> Constraint | None:
        """What holds a request's output to its `response_format` (None: free text)."""
        if options.response_format is None:
            return None
        if self.tokenizer is None:
            raise InputError("response_format needs the model's tokenizer (the session has none)")
        return Constraint(options.response_format, self.tokenizer, self.target.args.vocab_size)

    def starting_cache(self, ids: list[int], reuse: bool,
                       features: bool = False) -> tuple[list, int, mx.array | None]:
        """The target cache a request starts from, how many of its prompt tokens it holds and,
        with `features` (a feature draft reads every position), the target's hidden states
        over those: with `reuse`, the prompt cache's longest shared prefix (one that kept its
        hidden states, with `features`); else (or when none shares one) an empty cache."""
        cache, reused, prior = self.prompt_cache.take(ids, features) if reuse else (None, 0, None)
        if cache is None:
            cache = self.target.make_cache(max_rollback=self.k_max, **kv_keyword(self.kv))
        return cache, reused, prior

    def _steps(self, generation: Generation, ids: list[int], budget: int, stops: list[str],
               keep: bool) -> Iterator[GenerationStep]:
        if budget == 0:
            return
        mx.reset_peak_memory()
        try:
            yield from steps(generation.run(ids, budget), self.tokenizer, generation.stats, budget, stops)
        except GeneratorExit:  # the caller stopped reading: what was computed is still good
            self._keep(generation, keep)
            raise
        self._keep(generation, keep)

    def _keep(self, generation: Generation, keep: bool) -> None:
        """Return a finished generation's cache to the prompt cache."""
        if keep and generation.cache.offset <= len(generation.history):
            features = generation.features()  # first: it may roll the cache back to what was logged
            self.prompt_cache.put(generation.cached_tokens(), generation.cache, features)

    def generate(self, prompt: Prompt, options: GenerationOptions | None = None, **values: Any) -> str:
        """The whole completion text (as in `stream`)."""
        return "".join(step.text for step in self.stream(prompt, options, **values))

    def stream_chat(self, messages: Sequence[Message], options: GenerationOptions | None = None,
                    tools: list[dict] | None = None, **values: Any) -> Iterator[GenerationStep]:
        """The assistant's reply to role/content `messages` (system, user, assistant; tool
        results and assistant `tool_calls` as OpenAI writes them), in the model's chat
        template, one step per token (options as in `stream`). `tools` (OpenAI function
        tools) are offered through the template (`mlxspec.tools.prompt`); read the calls out
        of the reply with `mlxspec.parse_tool_calls(reply, fmt)`, `fmt` the format the
        template teaches (`mlxspec.tools.prompt.call_format(tokenizer.chat_format())`). Send the whole conversation each
        turn: the prompt cache prefills only what is new."""
        if tools and self.tokenizer is None:
            raise InputError("tools need the model's tokenizer (the session has none)")
        prompt = self.tokenizer.apply_chat(messages, tools) if tools else as_messages(messages)
        return self.stream(prompt, options, **values)

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None,
             tools: list[dict] | None = None, **values: Any) -> str:
        """The assistant's whole reply to `messages` (see `stream_chat`)."""
        return "".join(step.text for step in self.stream_chat(messages, options, tools, **values))

    def batch_generate(self, prompts: Sequence[Prompt], options: GenerationOptions | None = None,
                       **values: Any) -> list[Completion]:
        """Decode several prompts together in one batch, speculating inside it; options as in
        `request`. Returns a `Completion` (text, tokens, stats) per prompt; with `n` > 1, n per
        prompt, prompt by prompt (see `choices`)."""
        return batch_generate(self, prompts, options, **values)

    def choices(self, prompt: Prompt, options: GenerationOptions | None = None, **values: Any) -> list[Completion]:
        """`n` completions of one prompt (`session.choices(prompt, n=3, temperature=0.8)`;
        other options as in `request`), decoded together: the prompt is prefilled once and
        each choice draws with its own random stream. With a `seed` they are reproducible and
        choice 0 is what the same request gives with n=1, where the draft lengths do not depend
        on the batch (no draft, or `draft_policy` "fixed"; the "cost" policy picks them from step
        times measured at each batch size). Greedy choices are all equal."""
        return batch_generate(self, [prompt], options, **values)

    def open_batch(self) -> Batch:
        """An empty running batch of this session's requests: rows (`row`) join it between
        steps and leave when done (what a server runs on its one engine thread)."""
        return Batch(self)

    def row(self, request: Request, emit: Emit, choice: int = 0) -> Row:
        """A batch row for a checked request (`request`), its choice `choice` (0..n-1; the
        choices of a request join a batch together: `Batch.add`); its steps go to `emit`."""
        return make_row(self, request, emit, choice)
