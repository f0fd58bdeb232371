"""The prompts a distillation learns from: a JSONL file of the user's own (one prompt per
line: a string, `{"prompt": "..."}`, `{"messages": [...]}` or a list of messages), or the
built-in set; a fixed share held out for evaluation, never trained on."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..text.chat import as_messages
from .prompt_set import builtin_prompts

Prompt = str | list[dict[str, str]]
HELD_OUT_SHARE = 0.1  # of the prompts, at least one, kept for evaluation


def read_prompts(path: Path) -> list[Prompt]:
    """Every prompt of a JSONL file, checked; one clear error naming the line otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the prompts file {path} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    prompts = [_prompt(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise InputError(f"{path} holds no prompts (one JSON prompt per line: a string, "
                         '{"prompt": "..."} or {"messages": [...]})')
    return prompts


def _prompt(line: str, path: Path, n: int) -> Prompt:
    """One line as a prompt: a non-empty string or a list of role/content messages."""
    try:
        value: Any = json.loads(line)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise InputError(f"{path} line {n}: not valid JSON") from None
    if isinstance(value, dict):
        value = value.get("messages", value.get("prompt"))
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        try:
            return as_messages(value)
        except InputError as exc:
            raise InputError(f"{path} line {n}: {exc}") from None
    raise InputError(f"{path} line {n}: a prompt is a non-empty string, {{\"prompt\": \"...\"}} or "
                     '{"messages": [{"role": ..., "content": ...}, ...]}')


def split_prompts(path: Path | None, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, held-out prompts): the file's or the built-in ones, shuffled by
    `seed`, a tenth (at least one; none when there is just one prompt) held out."""
    prompts = read_prompts(path) if path is not None else builtin_prompts(seed)
    prompts = list(prompts)
    random.Random(seed).shuffle(prompts)
    held = max(1, round(HELD_OUT_SHARE * len(prompts))) if len(prompts) > 1 else 0
    return prompts[held:], prompts[:held]
