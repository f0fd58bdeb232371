"""Built-in prompts for `mlxspec demo` and `mlxspec bench`: chat, code, summarisation, and
grounded work (edit this code, answer from this text, correct this paragraph).

They are held out from the demo drafts' distillation data (`mlxspec distill`'s built-in
prompts, distill/prompt_set.py, come from other templates and never include these), so the
acceptance measured on them is the acceptance on unseen requests."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .reading import PROMPTS_LIMIT, read_file
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
    # grounded work: the answer repeats spans of the prompt (where prompt lookup pays)
    "grounded": [
        "Here is a Python function:\n\n```python\ndef mean(values):\n    total = 0\n    for v in values:\n"
        "        total += v\n    return total / len(values)\n```\n\nAdd a docstring to this function. "
        "Show the whole function.",
        "Fix the bug in this code and show the corrected code:\n\n```python\ndef is_even(n):\n"
        "    if n % 2 == 1:\n        return True\n    return False\n```",
        f"Read this text and answer the question using a quote from it.\n\nText: {_SUMMARY_TEXT}\n\n"
        "Question: Why did few people own books before the printing press?",
        "Correct the spelling mistakes in this paragraph and write it out again:\n\nThe wether was beautifull "
        "on saturday, so we went to the park and had a picnick. The children played on the swings while the "
        "adults talked about there plans for the summer.",
        "Translate this Python function into JavaScript:\n\n```python\ndef greet(name):\n"
        "    return 'Hello, ' + name + '!'\n```",
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
        text = decode_utf8(read_file(Path(path), PROMPTS_LIMIT), f"prompts file {path}")
    except OSError as exc:
        raise InputError(f"cannot read prompts file {path}: {exc.strerror}") from None
    text = text.replace("\r\n", "\n")  # files written on Windows
    separated = [b.strip() for b in f"\n{text}\n".split("\n---\n")]
    blocks = separated if len(separated) > 1 else text.splitlines()
    prompts = [b.strip() for b in blocks if b.strip()]
    if not prompts:
        raise InputError(f"{path}: no prompts (the file holds only blank lines or '---' separators)")
    return [("file", p) for p in prompts]


def chosen_prompts(prompts_file: Path | None, kinds: str | None) -> list[tuple[str, str]]:
    """(kind, prompt) pairs from a prompts file, or the built-in kinds named comma-separated
    (all of them when None)."""
    if kinds is not None and prompts_file is not None:
        raise InputError("give --prompts or --kinds, not both")
    if prompts_file is not None:
        return read_prompts(prompts_file)
    return builtin_prompts(None if kinds is None else [k.strip() for k in kinds.split(",")])
