"""One request from prompt to steps: the prompt's token ids, the checks before any work,
and turning generated ids into streamed text with a finish reason."""

from __future__ import annotations

import time
from typing import Iterator, Sequence

import mlx.core as mx

from ..errors import InputError
from ..models import Model
from ..text import Message, StreamingDetokenizer, Tokenizer
from .stats import GenerationStats, GenerationStep

Prompt = str | Sequence[int] | Sequence[Message]


def prompt_ids(tokenizer: Tokenizer | None, prompt: Prompt, chat: bool = False) -> list[int]:
    """Token ids for a prompt given as text (wrapped in the chat template with `chat`), as
    chat messages (role/content mappings; always templated), or as token ids."""
    messages = isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], dict)
    if isinstance(prompt, str) or messages:
        if isinstance(prompt, str) and not prompt.strip():
            raise InputError("prompt is empty")
        if tokenizer is None:
            raise InputError("a text prompt needs a tokenizer (or pass token ids)")
        if isinstance(prompt, str) and not chat:
            return tokenizer.encode(prompt)
        return tokenizer.apply_chat(prompt)
    try:
        ids = [int(t) for t in prompt]
    except (TypeError, ValueError):
        raise InputError("a prompt is text, chat messages or token ids") from None
    if not ids:
        raise InputError("prompt is empty")
    return ids


def token_budget(model: Model, ids: Sequence[int], max_tokens: int) -> int:
    """How many tokens the request may generate; `InputError` for a negative budget, ids
    outside the vocabulary or a prompt longer than the model's context."""
    if max_tokens < 0:
        raise InputError(f"max_tokens must be >= 0, got {max_tokens}")
    if any(not 0 <= t < model.args.vocab_size for t in ids):
        raise InputError(f"prompt holds token ids outside the vocabulary (0..{model.args.vocab_size - 1})")
    context = model.args.max_position_embeddings
    if context is None:
        return max_tokens
    if len(ids) > context:
        raise InputError(f"prompt has {len(ids)} tokens, more than the model's context of {context}")
    return min(max_tokens, context - len(ids) + 1)


def peak_memory_gb() -> float:
    """Peak memory MLX has allocated since the last reset, in GB."""
    return mx.get_peak_memory() / 1e9


def steps(tokens: Iterator[tuple[int, bool]], tokenizer: Tokenizer | None, stats: GenerationStats,
          budget: int) -> Iterator[GenerationStep]:
    """Detokenize, time and stop at an end-of-sequence token or the budget: the part every
    way of decoding shares. The token stream times its own prefill into `stats.prompt_time`."""
    detok = tokenizer.detokenizer() if tokenizer is not None else StreamingDetokenizer(lambda ids: "")
    eos_ids = tokenizer.eos_ids if tokenizer is not None else set()
    start = time.perf_counter()
    for n, (token, from_draft) in enumerate(tokens, 1):
        stats.generation_tokens = n
        stats.generation_time = time.perf_counter() - start - stats.prompt_time
        stats.peak_memory_gb = peak_memory_gb()
        if token in eos_ids:
            stats.finish_reason = "stop"
            yield GenerationStep(token, detok.finalize(), stats, from_draft)
            return
        text = detok.add(token)
        if n == budget:
            stats.finish_reason = "length"
            text += detok.finalize()
        yield GenerationStep(token, text, stats, from_draft)
