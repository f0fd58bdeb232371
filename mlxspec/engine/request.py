"""One request from prompt to steps: the prompt's token ids, the checks before any work,
and turning generated ids into streamed text with a finish reason."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import mlx.core as mx
import numpy as np

from ..errors import ContextError, InputError, InputTypeError
from ..models import Model
from ..text import Message, StreamingDetokenizer, Tokenizer
from ..text.chat import as_messages
from ..text.stops import StopMatcher
from ..text.unicode import check_text
from ..validate import is_int
from .logprobs import TokenLogprob
from .options import GenerationOptions
from .sampling import SamplingParams
from .stats import GenerationStats, GenerationStep

Prompt = str | Sequence[int] | Sequence[Message]

MAX_PREFILL_CHUNK = 2**20  # tokens per prefill pass; MLX indexes with 32-bit integers
_PROMPT_KINDS = "text (str), chat messages (a list of role/content dicts) or token ids (a list of ints)"


@dataclass(frozen=True)
class Request:
    """A checked request: the prompt's token ids, its options and how to decode after it."""

    ids: list[int]
    options: GenerationOptions
    budget: int  # tokens it may generate (max_tokens, capped by the context)
    chunk: int  # prompt tokens per prefill pass
    speculative: bool  # whether a draft may propose
    prompt_cache: bool
    k_max: int = 0  # the most tokens drafted per round

    @property
    def params(self) -> SamplingParams:
        return self.options.sampling

    @property
    def seed(self) -> int | None:
        return self.options.seed

    @property
    def stops(self) -> list[str]:
        return list(self.options.stop)

    @property
    def logprobs(self) -> int | None:
        return self.options.logprobs


def prompt_ids(tokenizer: Tokenizer | None, prompt: Prompt, chat: bool = False,
               context: int | None = None) -> list[int]:
    """Token ids for a prompt given as text (wrapped in the chat template with `chat`), as
    chat messages (role/content mappings; always templated), or as token ids. Text that
    cannot fit in `context` tokens is refused before it is tokenized."""
    if isinstance(prompt, str):
        check_text(prompt, "the prompt")
        if not prompt.strip():
            raise InputError("prompt is empty")
        return _encode(tokenizer, prompt, chat, context)
    if isinstance(prompt, (mx.array, np.ndarray)):
        prompt = _array_ids(prompt)
    if not isinstance(prompt, (list, tuple)):
        hint = " (decode it first: data.decode('utf-8'))" if isinstance(prompt, (bytes, bytearray)) else ""
        raise InputTypeError(f"a prompt is {_PROMPT_KINDS}; got {type(prompt).__name__}{hint}")
    if not prompt:
        raise InputError("prompt is empty")
    if all(isinstance(m, dict) for m in prompt):
        return _encode(tokenizer, as_messages(prompt), True, context)
    if all(isinstance(p, str) for p in prompt):
        raise InputTypeError("a list of strings is several prompts: send one request per prompt "
                             "(a Session keeps the calibration between them)")
    bad = next((i for i, t in enumerate(prompt) if not is_int(t)), None)
    if bad is not None:
        raise InputTypeError(f"a prompt is {_PROMPT_KINDS}; item {bad} is {prompt[bad]!r}")
    return [int(t) for t in prompt]


def _array_ids(array: mx.array | np.ndarray) -> list[int]:
    """Token ids from a 1-D integer array (numpy or MLX)."""
    values = np.array(array)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise InputTypeError(f"token ids must be a 1-D integer array, got shape {values.shape} of {values.dtype}")
    return values.tolist()


def _encode(tokenizer: Tokenizer | None, prompt: str | list[Message], chat: bool, context: int | None) -> list[int]:
    if tokenizer is None:
        raise InputError("a text prompt needs a tokenizer (or pass token ids)")
    text = prompt if isinstance(prompt, str) else "".join(m.get("content") or "" for m in prompt)
    size = len(text.encode("utf-8"))
    if context is not None and size > (context + 16) * tokenizer.max_piece_bytes:
        raise ContextError(f"prompt of {size} bytes cannot fit in the model's context of {context} tokens "
                         f"(a token here covers at most {tokenizer.max_piece_bytes} bytes)")
    if isinstance(prompt, str) and not chat:
        return tokenizer.encode(prompt)
    return tokenizer.apply_chat(prompt)


def check_prefill_chunk(prefill_chunk: object) -> None:
    """Prompt tokens per prefill pass: None (the default) or 1..MAX_PREFILL_CHUNK."""
    if prefill_chunk is not None and (not is_int(prefill_chunk) or not 0 < prefill_chunk <= MAX_PREFILL_CHUNK):
        raise InputError(f"prefill_chunk must be a positive integer up to {MAX_PREFILL_CHUNK}, got {prefill_chunk!r}")


def token_budget(model: Model, ids: Sequence[int], max_tokens: int) -> int:
    """How many tokens the request may generate; `InputError` for a negative budget, ids
    outside the vocabulary or a prompt longer than the model's context."""
    bad = next((t for t in ids if not 0 <= t < model.args.vocab_size), None)
    if bad is not None:
        raise InputError(f"prompt holds token id {bad}, outside the vocabulary (0..{model.args.vocab_size - 1})")
    context = model.args.max_position_embeddings
    if context is None:
        return max_tokens
    if len(ids) > context:
        raise ContextError(f"prompt has {len(ids)} tokens, more than the model's context of {context}")
    return min(max_tokens, context - len(ids) + 1)


def peak_memory_gb() -> float:
    """Peak memory MLX has allocated since the last reset, in GB."""
    return mx.get_peak_memory() / 1e9


class StepText:
    """Turns one generation's tokens into `GenerationStep`s, pushed one at a time: text
    deltas, timing, and the end at an end-of-sequence token, a stop string (never emitted:
    the step that completed it carries what came before it) or the budget (`done`)."""

    def __init__(self, tokenizer: Tokenizer | None, stats: GenerationStats, budget: int,
                 stops: Sequence[str] = ()) -> None:
        self.detok = tokenizer.detokenizer() if tokenizer is not None else StreamingDetokenizer(lambda ids: "")
        self.eos_ids = tokenizer.eos_ids if tokenizer is not None else set()
        self.matcher = StopMatcher(stops)
        self.stats, self.budget = stats, budget
        self.start = time.perf_counter()
        self.done = False

    def add(self, token: int, from_draft: bool = False, logprob: TokenLogprob | None = None) -> GenerationStep:
        """The step for the next token."""
        stats, matcher = self.stats, self.matcher
        stats.generation_tokens += 1
        stats.generation_time = time.perf_counter() - self.start - stats.prompt_time
        stats.peak_memory_gb = peak_memory_gb()
        if token in self.eos_ids:
            text = matcher.add(self.detok.finalize()) + matcher.flush()
            stats.finish_reason, self.done = "stop", True
            return GenerationStep(token, text, stats, from_draft, logprob, "stop")
        text = matcher.add(self.detok.add(token))
        if not matcher.stopped and stats.generation_tokens == self.budget:
            text += matcher.add(self.detok.finalize()) + matcher.flush()
            stats.finish_reason, self.done = "length", True
        if matcher.stopped:
            stats.finish_reason, self.done = "stop", True
        return GenerationStep(token, text, stats, from_draft, logprob, stats.finish_reason if self.done else None)


def steps(tokens: Iterator[tuple[int, bool, TokenLogprob | None]], tokenizer: Tokenizer | None,
          stats: GenerationStats, budget: int, stops: Sequence[str] = ()) -> Iterator[GenerationStep]:
    """Detokenize, time and stop (see `StepText`): the part every way of decoding shares. The
    token stream times its own prefill into `stats.prompt_time`."""
    text = StepText(tokenizer, stats, budget, stops)
    for token, from_draft, logprob in tokens:
        yield text.add(token, from_draft, logprob)
        if text.done:
            return
