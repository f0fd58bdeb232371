"""Tool calls as models write them, and as OpenAI's API returns them.

Three formats cover the models most run locally:
- "hermes" (Hermes, Qwen 2.5/3, and the fallback prompt for templates without tools):
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, several in a row for parallel calls;
- "mistral": `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (the list alone where
  `[TOOL_CALLS]` is a special token, left out of the text), or since the v11 tokenizers
  `[TOOL_CALLS]name[ARGS]{...}` (repeated for parallel calls), to the end of the reply;
- "llama" (Llama 3.1-3.3): a reply that is one JSON object `{"name": ..., "parameters": {...}}`
  (several joined by ";"), optionally after `<|python_tag|>`.
A call's text that does not parse (malformed JSON, no name) is not a call: it stays text.
mlx-lm's parsers (`mlx_lm.tool_parsers`) read only the text between markers, raise on
malformed text, and differ across the mlx-lm versions mlxspec supports, so the formats are
read here, in one place, with the same rules streamed and not."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("hermes", "mistral", "llama")


def new_call_id() -> str:
    """An OpenAI-style tool call id: "call_" and random hex."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    """One call a model made: the function's `name` and its `arguments` (a JSON object)."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)

    @property
    def arguments_json(self) -> str:
        """The arguments as OpenAI sends them: JSON text."""
        return json.dumps(self.arguments, ensure_ascii=False)

    def as_openai(self) -> dict[str, Any]:
        """OpenAI's `tool_calls` entry."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}


@dataclass(frozen=True)
class Markers:
    """Where a format's calls start and end in the text (`end` None: at the reply's end)."""

    start: str
    end: str | None


MARKERS = {"hermes": Markers("<tool_call>", "</tool_call>"), "mistral": Markers("[TOOL_CALLS]", None),
           "llama": Markers("<|python_tag|>", None)}


def calls_in(body: str, fmt: str) -> list[ToolCall] | None:
    """The calls written in `body` (the text between a format's markers, or for "llama" the
    whole reply), or None when it holds none that parse."""
    text = body.strip()
    if fmt == "hermes":
        return _objects([_json(text)], "arguments")
    if fmt == "mistral":
        value = _json(text)
        return _objects(value, "arguments") if isinstance(value, list) else _headed(text)
    return _objects([_json(part) for part in _split_semicolons(text)], "parameters")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _objects(values: list, key: str) -> list[ToolCall] | None:
    """Calls from {"name", key | "arguments" | "parameters"} objects; None if any is not one."""
    calls = []
    for value in values:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            return None
        arguments = next((value[k] for k in (key, "arguments", "parameters") if k in value), {})
        if isinstance(arguments, str):  # some models write the arguments as JSON text
            arguments = _json(arguments)
        if not isinstance(arguments, dict):
            return None
        calls.append(ToolCall(value["name"], arguments))
    return calls or None


def _headed(text: str) -> list[ToolCall] | None:
    """Mistral v11's `name[ARGS]{...}`, repeated."""
    decoder, calls, at = json.JSONDecoder(), [], 0
    while at < len(text):
        head = text.find("[ARGS]", at)
        name = text[at:head].strip() if head >= 0 else ""
        if not name or any(c.isspace() for c in name):
            return None
        try:
            arguments, at = decoder.raw_decode(text, head + len("[ARGS]"))
        except (ValueError, RecursionError):
            return None
        if not isinstance(arguments, dict):
            return None
        calls.append(ToolCall(name, arguments))
        while at < len(text) and text[at].isspace():
            at += 1
    return calls or None


def _split_semicolons(text: str) -> list[str]:
    """Llama's `{...}; {...}`: the JSON values one after another, split where each ends."""
    decoder, parts, at = json.JSONDecoder(), [], 0
    while at < len(text):
        try:
            _, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            return [text]
        parts.append(text[at:end])
        at = end
        while at < len(text) and (text[at].isspace() or text[at] == ";"):
            at += 1
    return parts


def template_format(template: str | None) -> str:
    """The call format a chat template teaches its model (by the markers it writes);
    "hermes" for a template that names none (and for the fallback prompt)."""
    source = template or ""
    if "[TOOL_CALLS]" in source:
        return "mistral"
    if "<tool_call>" in source:
        return "hermes"
    if "<|python_tag|>" in source or ("tools" in source and "parameters" in source and "<|eot_id|>" in source):
        return "llama"
    return "hermes"
