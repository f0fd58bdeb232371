"""OpenAI's response shapes: steps to completions, chunks, usage and logprobs (requests are
`request.py`'s, errors `errors.py`'s). Two extensions, which OpenAI's clients ignore (they keep
unknown fields): responses add a `speculative` object to `usage`, and each streamed chunk of a
token adds `"mlxspec": {"from_draft": bool}`, whether the draft proposed that token (the target
accepted it) or the target sampled it (the chat page colours the draft's)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..engine.logprobs import TokenLogprob
from ..engine.stats import GenerationStats, GenerationStep, SpeculativeStats
from ..text import Tokenizer


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
          logprobs: dict | None = None, role: bool = False, from_draft: bool | None = None) -> dict:
    """One streamed chunk; that of a token says whether it came from the draft (`from_draft`)."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": logprobs}
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    out = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
           "created": int(time.time()), "model": model, "choices": [choice]}
    if from_draft is not None:
        out["mlxspec"] = {"from_draft": from_draft}
    return out
