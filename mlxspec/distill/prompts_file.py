"""The prompts a distillation learns from: a JSONL file of the user's own (one prompt per
line: a string, `{"prompt": "..."}`, `{"messages": [...]}` or a list of messages), or the
built-in set; a fixed share held out for evaluation, never trained on.

Every line is checked before any work, and once the target is loaded every prompt is put
through its chat template and measured against its context, so that a bad line is one
error naming file and line, never a failure halfway through answering."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..errors import InputError, TokenizerError
from ..reading import PROMPTS_LIMIT, read_file
from ..text.unicode import check_text
from .prompt_set import builtin_prompts

Prompt = str | list[dict[str, str]]
HELD_OUT_SHARE = 0.1  # of the prompts, at least one, kept for evaluation
ROLES = ("system", "user", "assistant")
FORMS = 'a non-empty string, {"prompt": "..."} or {"messages": [{"role": ..., "content": ...}, ...]}'


def read_prompts(path: Path) -> list[tuple[str, Prompt]]:
    """Every prompt of a JSONL file with where it stands ("FILE line N"), checked; one clear
    error naming the line otherwise."""
    try:
        text = read_file(path, PROMPTS_LIMIT).decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the prompts file {path} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    prompts = [(f"{path} line {n}", _prompt(line, f"{path} line {n}"))
               for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise InputError(f"{path} holds no prompts (one JSON prompt per line: {FORMS})")
    return prompts


def _prompt(line: str, where: str) -> Prompt:
    """One line as a prompt: a non-empty string or a list of role/content messages."""
    try:
        value: Any = json.loads(line)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise InputError(f"{where}: not valid JSON") from None
    if isinstance(value, dict):
        keys = [key for key in ("prompt", "messages") if key in value]
        if len(keys) != 1:
            raise InputError(f'{where}: an object needs exactly one of "prompt" and "messages"; a prompt is {FORMS}')
        if keys == ["messages"] and not isinstance(value["messages"], list):
            raise InputError(f'{where}: "messages" must be a list of {{"role": ..., "content": ...}} messages')
        if keys == ["prompt"] and not (isinstance(value["prompt"], str) and value["prompt"].strip()):
            raise InputError(f'{where}: "prompt" must be a non-empty string')
        value = value[keys[0]]
    if isinstance(value, str) and value.strip():
        return _text(value, where)
    if isinstance(value, list):
        return _messages(value, where)
    raise InputError(f"{where}: a prompt is {FORMS}")


def _text(value: str, where: str, what: str = "the prompt") -> str:
    """`value`, or one error naming `where` when it is not valid UTF-8 text."""
    try:
        return check_text(value, what)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _messages(value: list, where: str) -> list[dict[str, str]]:
    """A conversation: messages with a known role and string content, one of them a user's
    with some text (what the target answers)."""
    if not value:
        raise InputError(f"{where}: the list of messages is empty")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: message {i} must be {{\"role\": one of {', '.join(ROLES)}, "
                             f"\"content\": a string}}, got {json.dumps(m)[:80]}")
        _text(m["content"], where, f"message {i}'s content")
    if not any(m["role"] == "user" and m["content"].strip() for m in value):
        raise InputError(f"{where}: no user message with text (the target answers the user)")
    return value


def check_prompts(prompts: list[tuple[str, Prompt]], tokenizer: Any, context: int, max_new: int) -> None:
    """Each prompt put through the target's chat template, and its tokens and the `max_new`
    of the answer within the target's `context`; one error naming the prompt otherwise."""
    for where, prompt in prompts:
        try:
            n = len(tokenizer.apply_chat(prompt))
        except (InputError, TokenizerError) as exc:
            raise InputError(f"{where}: {exc}") from None
        if n + max_new > context:
            raise InputError(f"{where}: the prompt is {n} tokens in the chat template; with --max-new {max_new} "
                             f"the answer would pass the target's context of {context} tokens")


def numbered_prompts(path: Path | None, seed: int) -> list[tuple[str, Prompt]]:
    """The file's prompts, or the built-in ones (in their order for `seed`), each with where it stands."""
    if path is not None:
        return read_prompts(path)
    return [(f"built-in prompt {n}", p) for n, p in enumerate(builtin_prompts(seed), 1)]


def split_prompts(path: Path | list[tuple[str, Prompt]] | None, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, held-out prompts): the file's or the built-in ones (or those given,
    as `numbered_prompts` gives them), shuffled by `seed`, a tenth (at least one; none when
    there is just one prompt) held out."""
    numbered = path if isinstance(path, list) else numbered_prompts(path, seed)
    prompts = [prompt for _, prompt in numbered]
    random.Random(seed).shuffle(prompts)
    held = max(1, round(HELD_OUT_SHARE * len(prompts))) if len(prompts) > 1 else 0
    return prompts[held:], prompts[:held]
