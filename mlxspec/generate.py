"""Autoregressive generation: chunked prefill, one decode step, the streaming generator."""

from __future__ import annotations

import time
from typing import Iterator, Sequence

import mlx.core as mx

from .errors import InputError
from .feature_draft import FeatureDraft
from .model import Cache, Model
from .sampling import SamplingParams, sample
from .stats import GenerationStats, GenerationStep
from .tokenizer import StreamingDetokenizer, Tokenizer


def prepare_prompt(tokenizer: Tokenizer | None, prompt: str | Sequence[int], chat: bool = False) -> list[int]:
    """Token ids for a prompt given as text (optionally wrapped in the chat format) or ids."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError("prompt is empty")
        if tokenizer is None:
            raise InputError("a text prompt needs a tokenizer (or pass token ids)")
        return tokenizer.apply_chat(prompt) if chat else tokenizer.encode(prompt)
    ids = [int(t) for t in prompt]
    if not ids:
        raise InputError("prompt is empty")
    return ids


def prefill(model: Model, tokens: Sequence[int], cache: list[Cache], chunk_size: int) -> mx.array:
    """Feed the prompt through the cache `chunk_size` tokens at a time; logits of the last one."""
    prompt = mx.array(tokens)[None]
    n = prompt.shape[1]
    for start in range(0, n - 1, chunk_size):
        end = min(start + chunk_size, n - 1)
        model(prompt[:, start:end], cache)
        mx.eval([c.keys for c in cache])
    return model(prompt[:, n - 1 :], cache)[:, -1, :]


def decode_step(model: Model, token: mx.array, cache: list[Cache]) -> mx.array:
    """Logits `[1, vocab]` after feeding one token `[1]`."""
    return model(token[:, None], cache)[:, -1, :]


def default_chunk_size(model: Model) -> int:
    """Prefill chunk: the sliding window when there is one, else 2048 tokens."""
    return model.args.sliding_window or 2048


def peak_memory_gb() -> float:
    """Peak memory MLX has allocated since the last reset, in GB."""
    return mx.get_peak_memory() / 1e9


def check_request(model: Model, prompt_ids: Sequence[int], max_tokens: int) -> None:
    """Raise `InputError` for a negative budget or a prompt longer than the model's context."""
    if max_tokens < 0:
        raise InputError(f"max_tokens must be >= 0, got {max_tokens}")
    context = model.args.max_position_embeddings
    if context is not None and len(prompt_ids) > context:
        raise InputError(f"prompt has {len(prompt_ids)} tokens, more than the model's context of {context}")
    if any(not 0 <= t < model.args.vocab_size for t in prompt_ids):
        raise InputError(f"prompt holds token ids outside the vocabulary (0..{model.args.vocab_size - 1})")


def autoregressive_tokens(model: Model, prompt_ids: list[int], params: SamplingParams, budget: int,
                          chunk: int, stats: GenerationStats) -> Iterator[tuple[int, bool]]:
    """Plain decoding: prefill, then one target step per token (the next step is queued
    with `mx.async_eval` before the current token is read back)."""
    cache = model.make_cache()
    start = time.perf_counter()
    token = sample(prefill(model, prompt_ids, cache, chunk), params)
    mx.eval(token)
    stats.prompt_time = time.perf_counter() - start
    for n in range(1, budget + 1):
        if n < budget:
            next_token = sample(decode_step(model, token, cache), params)
            mx.async_eval(next_token)
        yield token.item(), False
        if n < budget:
            token = next_token


def stream_generate(
    model: Model,
    tokenizer: Tokenizer | None,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    chat: bool = False,
    prefill_chunk: int | None = None,
    draft: Model | FeatureDraft | None = None,
    num_draft_tokens: int = 6,
    adaptive: bool = True,
    draft_schedule: str = "cost",
) -> Iterator[GenerationStep]:
    """Generate, yielding one `GenerationStep` per token.

    With `draft` (a model with the target's vocabulary, or a `FeatureDraft` that reads the
    target's hidden states), decodes speculatively: up to `num_draft_tokens` drafted per round, the
    length chosen by a cost model measured on this device (`adaptive=False` pins it;
    `draft_schedule="heuristic"` uses transformers' +2/-1 rule instead). Stops at an
    end-of-sequence token, after `max_tokens`, or at the model's context length; the last
    step's `stats.finish_reason` says which ("stop" or "length"). With `tokenizer=None` the
    prompt must be token ids and steps carry ids only (empty text, no end-of-sequence stop)."""
    params = SamplingParams(temperature, top_p, top_k)
    prompt_ids = prepare_prompt(tokenizer, prompt, chat)
    check_request(model, prompt_ids, max_tokens)
    if draft is not None:
        from .speculative import check_pair

        check_pair(model, draft, num_draft_tokens)
    if max_tokens == 0:
        return
    budget = max_tokens
    if model.args.max_position_embeddings is not None:
        budget = min(budget, model.args.max_position_embeddings - len(prompt_ids) + 1)
    chunk = prefill_chunk or default_chunk_size(model)
    mx.reset_peak_memory()
    if draft is None:
        stats = GenerationStats(prompt_tokens=len(prompt_ids))
        tokens = autoregressive_tokens(model, prompt_ids, params, budget, chunk, stats)
    else:
        tokens, stats = _speculative(model, draft, prompt_ids, params, budget, chunk,
                                     num_draft_tokens, adaptive, draft_schedule)
    if seed is not None:  # after the calibration, which samples too: the same seed gives the same text
        mx.random.seed(seed)  # whether or not the calibration was cached (the token generators are lazy)
    yield from _emit(tokens, tokenizer, stats, budget)


def _speculative(model, draft, prompt_ids, params, budget, chunk, k_max, adaptive, schedule):
    from .costmodel import calibrate
    from .speculative import SpeculativeDecoder, speculative_tokens

    timings = None
    if adaptive and schedule == "cost":
        start = time.perf_counter()
        timings = calibrate(model, draft, k_max, params)
        calibration = time.perf_counter() - start
    decoder = SpeculativeDecoder(model, draft, params, k_max, adaptive, timings, schedule, chunk)
    decoder.stats.prompt_tokens = len(prompt_ids)
    if timings is not None:
        decoder.stats.extra["calibration_time"] = calibration
    return speculative_tokens(decoder, prompt_ids, budget), decoder.stats


def _emit(tokens, tokenizer: Tokenizer | None, stats: GenerationStats, budget: int) -> Iterator[GenerationStep]:
    """Detokenize, time and stop: the part every decoding strategy shares."""
    detok = tokenizer.detokenizer() if tokenizer is not None else StreamingDetokenizer(lambda ids: "")
    eos_ids = tokenizer.eos_ids if tokenizer is not None else set()
    start = time.perf_counter()  # the token generators time their own prefill into prompt_time
    for n, (tok, from_draft) in enumerate(tokens, 1):
        stats.generation_tokens = n
        stats.generation_time = time.perf_counter() - start - stats.prompt_time
        stats.peak_memory_gb = peak_memory_gb()
        if tok in eos_ids:
            stats.finish_reason = "stop"
            yield GenerationStep(tok, detok.finalize(), stats, from_draft)
            return
        text = detok.add(tok)
        if n == budget:
            stats.finish_reason = "length"
            text += detok.finalize()
        yield GenerationStep(tok, text, stats, from_draft)


def generate(model: Model, tokenizer: Tokenizer | None, prompt: str | Sequence[int], **options) -> str:
    """Generate and return the whole completion text (options as in `stream_generate`)."""
    return "".join(step.text for step in stream_generate(model, tokenizer, prompt, **options))
