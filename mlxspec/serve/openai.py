"""OpenAI's request and response shapes: a request body to a prompt and its options, and
steps back to completions, chunks, usage and logprobs. Beyond OpenAI's fields a client may
send every other `GenerationOptions` field (`top_k`, `repetition_penalty`, ...),
`num_draft_tokens` (the most drafted per step for this request, up to the server's `-k`;
0: no speculation) and `speculative`; responses add a `speculative` object to `usage`."""

from __future__ import annotations

import time
import uuid
from dataclasses import fields
from typing import Any, NamedTuple

from ..engine.logprobs import TokenLogprob
from ..engine.options import GenerationOptions
from ..engine.stats import GenerationStats, GenerationStep, SpeculativeStats
from ..errors import InputError, InputTypeError
from ..text import Tokenizer


class Asked(NamedTuple):
    """What a request body asks for: its options and how far it may speculate."""

    options: GenerationOptions
    speculative: bool = True
    num_draft_tokens: int | None = None


def _typed(body: dict, name: str, kind: type, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise InputTypeError(f"'{name}' must be {kind.__name__}, got {value!r}")
    return value


def asked(body: dict, defaults: GenerationOptions, chat: bool) -> Asked:
    """The request's options from its body: every `GenerationOptions` field by its name (or
    OpenAI's other spelling of it) over the server's `defaults`, checked there, so that a bad
    value gets the message the library and the command line give."""
    if _typed(body, "n", int, 1) != 1:
        raise InputError("'n' must be 1 (one completion per request)")
    values = {}
    for f in fields(GenerationOptions):
        given = [body[key] for key in (*f.metadata["json"], f.name) if body.get(key) is not None]
        if given:
            values[f.name] = given[0]
    values.pop("logprobs", None)
    values.update(_logprobs(body, chat))
    return Asked(defaults.with_values(values), _typed(body, "speculative", bool, True),
                 _typed(body, "num_draft_tokens", int))


def _logprobs(body: dict, chat: bool) -> dict[str, Any]:
    """Chat's `logprobs: true` with `top_logprobs: N`, or the legacy completions' `logprobs: N`."""
    if chat:
        if not _typed(body, "logprobs", bool, False):
            return {}
        return {"logprobs": _typed(body, "top_logprobs", int, 0)}
    return {} if body.get("logprobs") is None else {"logprobs": body["logprobs"]}


def chat_prompt(body: dict) -> list[dict]:
    """The messages of a chat request; content given as parts ([{"type": "text", "text": ...}])
    is joined into its text."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputTypeError("'messages' must be a non-empty list of {role, content} objects")
    return [_text_content(m, i) if isinstance(m, dict) and isinstance(m.get("content"), list) else m
            for i, m in enumerate(messages)]


def _text_content(message: dict, index: int) -> dict:
    parts = message["content"]
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        raise InputError(f"messages[{index}]: only text content parts are supported (type 'text')")
    return {**message, "content": "".join(p["text"] for p in parts)}


def completion_prompt(body: dict) -> str | list[int]:
    """The prompt of a completion request: text or token ids (a list of one is unwrapped)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt)):
        return prompt
    raise InputTypeError("'prompt' must be a string or a list of token ids (one prompt per request)")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(stats: GenerationStats | None, prompt_tokens: int = 0) -> dict:
    """OpenAI's usage, with the prompt cache's share and what speculation did."""
    if stats is None:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}
    out = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generation_tokens,
           "total_tokens": stats.prompt_tokens + stats.generation_tokens,
           "prompt_tokens_details": {"cached_tokens": stats.prompt_cached_tokens}}
    if isinstance(stats, SpeculativeStats):
        out["speculative"] = {"rounds": stats.rounds, "drafted": stats.drafted, "accepted": stats.accepted,
                              "acceptance_rate": round(stats.acceptance_rate, 4),
                              "tokens_per_round": round(stats.tokens_per_round, 4)}
    return out


def _token(tokenizer: Tokenizer, token: int) -> tuple[str, list[int]]:
    text = tokenizer.decode([token])
    return text, list(text.encode("utf-8"))


def chat_logprobs(tokenizer: Tokenizer, steps: list[GenerationStep]) -> dict | None:
    """The `logprobs` of a chat choice (None when not asked for)."""
    if not steps or steps[0].logprob is None:
        return None
    content = []
    for step in steps:
        record: TokenLogprob = step.logprob
        text, raw = _token(tokenizer, step.token)
        top = [{"token": t, "logprob": lp, "bytes": b} for (t, b), lp in
               ((_token(tokenizer, i), lp) for i, lp in record.top)]
        content.append({"token": text, "logprob": record.logprob, "bytes": raw, "top_logprobs": top})
    return {"content": content}


def completion_logprobs(tokenizer: Tokenizer, steps: list[GenerationStep]) -> dict | None:
    """The legacy completions `logprobs` object (None when not asked for)."""
    if not steps or steps[0].logprob is None:
        return None
    tokens, offsets, at = [], [], 0
    for step in steps:
        tokens.append(tokenizer.decode([step.token]))
        offsets.append(at)
        at += len(step.text)
    return {"tokens": tokens, "token_logprobs": [s.logprob.logprob for s in steps], "text_offset": offsets,
            "top_logprobs": [{tokenizer.decode([i]): lp for i, lp in s.logprob.top} for s in steps]}


def completion(kind: str, rid: str, model: str, text: str, finish: str | None, stats: GenerationStats | None,
               logprobs: dict | None, prompt_tokens: int = 0) -> dict:
    """A whole chat completion (`kind` "chat") or text completion."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish or "length", "logprobs": logprobs}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice], "usage": usage(stats, prompt_tokens)}


def chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None = None,
          logprobs: dict | None = None, role: bool = False) -> dict:
    """One streamed chunk."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": logprobs}
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
