"""One-call generation for scripts: a `Session` made for the call and dropped after it.
Apps that send many requests keep a `Session` instead (it carries the calibration and the
draft's acceptance from one request to the next)."""

from __future__ import annotations

from typing import Any, Iterator

from ..drafts import Draft
from ..models import Model
from ..text import Tokenizer
from .options import GenerationOptions
from .request import Prompt
from .session import Session
from .stats import GenerationStep


def stream_generate(model: Model, tokenizer: Tokenizer | None, prompt: Prompt, options: GenerationOptions | None = None,
                    *, draft: Draft | str | None = None, num_draft_tokens: int = 6, draft_policy: str = "cost",
                    chat: bool = False, prefill_chunk: int | None = None, kv_bits: int | None = None,
                    kv_group_size: int = 64, **values: Any) -> Iterator[GenerationStep]:
    """Generate, yielding one `GenerationStep` per token (see `Session.stream`): `options`
    (a `GenerationOptions`) and any of its fields by name (`max_tokens=32, temperature=0.7,
    stop=["\\n"], ...`).

    With `draft` (any draft `Session` takes: a loaded draft, a draft kind, or a kind's
    name such as "ngram"), decodes speculatively: up to `num_draft_tokens` drafted per
    round, the length chosen per `draft_policy` ("cost": a cost model measured on this
    device; "fixed"; "heuristic"). The output follows the target's distribution exactly.
    `kv_bits` (4 or 8) quantizes the key/value caches in groups of `kv_group_size` (see `Session`)."""
    session = Session(model, tokenizer, draft, num_draft_tokens=num_draft_tokens, draft_policy=draft_policy,
                      kv_bits=kv_bits, kv_group_size=kv_group_size)
    return session.stream(prompt, options, chat=chat, prefill_chunk=prefill_chunk, **values)


def generate(model: Model, tokenizer: Tokenizer | None, prompt: Prompt, options: GenerationOptions | None = None,
             **values: Any) -> str:
    """The whole completion text (arguments as in `stream_generate`)."""
    return "".join(step.text for step in stream_generate(model, tokenizer, prompt, options, **values))
