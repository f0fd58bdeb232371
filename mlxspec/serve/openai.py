"""OpenAI's response shapes: steps to completions, chunks, usage and logprobs (requests are
`request.py`'s, errors `errors.py`'s). Two extensions, which OpenAI's clients ignore (they keep
unknown fields): responses add a `speculative` object to `usage`, and each streamed chunk of a
token adds `"mlxspec": {"from_draft": bool}`, whether the draft proposed that token (the target
accepted it) or the target sampled it (the chat page colours the draft's). A request with n
choices counts its prompt once and every choice's tokens in `usage`."""

from __future__ import annotations

import time
import uuid
from typing import Any, NamedTuple, Sequence

from ..engine.logprobs import TokenLogprob
from ..engine.stats import GenerationStats, GenerationStep, SpeculativeStats
from ..text import Tokenizer


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Choice(NamedTuple):
    """One choice of a whole completion: its text, its stats (None: no token) and logprobs."""

    text: str
    stats: GenerationStats | None
    logprobs: dict | None


def usage(choices: Sequence[GenerationStats | None], prompt_tokens: int = 0) -> dict:
    """OpenAI's usage over a request's choices (their stats, in order; the first prefilled the
    prompt, counted once), with the prompt cache's share and what speculation did."""
    first, stats = choices[0] if choices else None, [s for s in choices if s is not None]
    prompt, generated = first.prompt_tokens if first else prompt_tokens, sum(s.generation_tokens for s in stats)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}
    if first is not None:
        out["prompt_tokens_details"] = {"cached_tokens": first.prompt_cached_tokens}
    if stats and all(isinstance(s, SpeculativeStats) for s in stats):
        out["speculative"] = _speculative(stats)
    return out


def _speculative(stats: list) -> dict:
    """What speculation did, over every choice."""
    rounds, drafted, accepted = (sum(getattr(s, name) for s in stats) for name in ("rounds", "drafted", "accepted"))
    after_first = sum(s.generation_tokens - 1 for s in stats)  # each choice's first token came from the prefill
    return {"rounds": rounds, "drafted": drafted, "accepted": accepted,
            "acceptance_rate": round(accepted / drafted if drafted else 0.0, 4),
            "tokens_per_round": round(after_first / rounds if rounds else 0.0, 4)}


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


def completion(kind: str, rid: str, model: str, choices: Sequence[Choice], prompt_tokens: int = 0) -> dict:
    """A whole chat completion (`kind` "chat") or text completion of one or more choices."""
    listed = []
    for index, (text, stats, logprobs) in enumerate(choices):
        finish = stats.finish_reason if stats is not None else None
        choice: dict[str, Any] = {"index": index, "finish_reason": finish or "length", "logprobs": logprobs}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        listed.append(choice)
    return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": listed,
            "usage": usage([c.stats for c in choices], prompt_tokens)}


def chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None = None,
          logprobs: dict | None = None, role: bool = False, index: int = 0, from_draft: bool | None = None) -> dict:
    """One streamed chunk of choice `index`; that of a token says whether it came from the draft
    (`from_draft`)."""
    choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": logprobs}
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
