"""Built-in prompts for `mlxspec demo` and `mlxspec bench`: chat, code and summarisation.

They are held out from the demo draft's distillation data (its training prompts are
generated from other templates in benchmarks/demo_pair/distill.py), so the acceptance
measured on them is the acceptance on unseen requests."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .text.unicode import decode_utf8

_SUMMARY_TEXT = (
    "The printing press, developed by Johannes Gutenberg around 1440, made it possible to "
    "produce books quickly and cheaply. Before it, texts were copied by hand, which was slow "
    "and expensive, so few people owned books. Within fifty years presses were working in more "
    "than two hundred European cities, literacy spread, and new ideas in science and religion "
    "travelled faster than ever before."
)

BUILTIN_PROMPTS: dict[str, list[str]] = {
    "chat": [
        "What are the main differences between a comet and an asteroid?",
        "Give me three tips for staying focused while studying at home.",
        "Why is the sky blue? Explain it to a ten-year-old.",
    ],
    "code": [
        "Write a Python function that returns the n-th Fibonacci number using iteration.",
        "Write a Python function that reverses the words in a sentence.",
        "Explain what a Python list comprehension is, with an example.",
    ],
    "summarisation": [
        f"Summarise the following text in two sentences.\n\n{_SUMMARY_TEXT}",
    ],
}


def builtin_prompts(kinds: list[str] | None = None) -> list[tuple[str, str]]:
    """(kind, prompt) pairs of the built-in set, optionally only some kinds."""
    kinds = kinds or list(BUILTIN_PROMPTS)
    unknown = [k for k in kinds if k not in BUILTIN_PROMPTS]
    if unknown:
        raise InputError(f"unknown prompt kind {unknown[0]!r} (built in: {', '.join(BUILTIN_PROMPTS)})")
    return [(kind, prompt) for kind in kinds for prompt in BUILTIN_PROMPTS[kind]]


def read_prompts(path: Path) -> list[tuple[str, str]]:
    """Prompts from a file: one per line, or blocks separated by a line holding only `---`."""
    try:
        text = decode_utf8(Path(path).read_bytes(), f"prompts file {path}")
    except OSError as exc:
        raise InputError(f"cannot read prompts file {path}: {exc.strerror}") from None
    text = text.replace("\r\n", "\n")  # files written on Windows
    separated = [b.strip() for b in f"\n{text}\n".split("\n---\n")]
    blocks = separated if len(separated) > 1 else text.splitlines()
    prompts = [b.strip() for b in blocks if b.strip()]
    if not prompts:
        raise InputError(f"{path}: no prompts (the file holds only blank lines or '---' separators)")
    return [("file", p) for p in prompts]
