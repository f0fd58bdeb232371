"""What a request's output must look like: any JSON object, JSON that a schema describes
(OpenAI's `response_format`), or text that a grammar (Lark or GBNF) or a regular
expression accepts. A format is checked and compiled once, when the request's options are
made, into one llguidance grammar that `constraint.Constraint` enforces token by token.

Spellings: OpenAI's objects (`{"type": "json_schema", "json_schema": {"name": ..., "schema":
{...}, "strict": true}}`, `{"type": "json_object"}`, `{"type": "text"}`), and two of
llama.cpp's server: `{"type": "grammar", "grammar": "..."}` (Lark, or GBNF as llama.cpp
writes it) and `{"type": "regex", "regex": "..."}`. On a command line the value is text:
"json", such an object as JSON, a bare JSON schema, or a file holding one of those (.json)
or a grammar (any other name). With `strict` (OpenAI's default is false) a schema keyword
llguidance cannot enforce is an error; without it, such a keyword is ignored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, InputTypeError

KINDS = ("json_object", "json_schema", "grammar", "regex")
SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")  # JSON schema's "type"s
INSTALL = "pip install 'mlxspec[structured]'"
MAX_FILE_BYTES = 1 << 20
# Whitespace between JSON tokens: a few spaces, or one line break and an indent. Unbounded
# whitespace lets a small model emit newlines until max_tokens (llama.cpp's JSON grammars
# bound it the same way).
JSON_WHITESPACE = r"[ \t]{0,2}(\n[ \t]{0,24})?"


@dataclass(frozen=True)
class ResponseFormat:
    """A checked output format: its `kind` (one of `KINDS`), its `source` (the schema as JSON
    text, the grammar or the regex) and the llguidance `grammar` compiled from it."""

    kind: str
    source: str
    grammar: str
    strict: bool = False
    name: str | None = None

    def as_json(self) -> dict[str, Any]:
        """OpenAI's spelling of this format."""
        if self.kind == "json_schema":
            body = {"schema": json.loads(self.source), "strict": self.strict, **({"name": self.name} if self.name else {})}
            return {"type": "json_schema", "json_schema": body}
        return {"type": self.kind} if self.kind == "json_object" else {"type": self.kind, self.kind: self.source}


def response_format(value: object) -> ResponseFormat | None:
    """The format `value` asks for (None: free text); `InputError` naming what is wrong."""
    if value is None or isinstance(value, ResponseFormat):
        return value
    if isinstance(value, str):
        value = _from_text(value)
        if value is None:
            return None
    if not isinstance(value, Mapping):
        raise InputTypeError(f"response_format must be an object such as {{\"type\": \"json_object\"}}, "
                             f"got {type(value).__name__}")
    return _from_object(value)


def _from_object(value: Mapping) -> ResponseFormat | None:
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _compiled("json_object", json.dumps({"type": "object"}), False)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), Mapping):
            raise InputError("response_format.json_schema must be an object with a 'schema' object")
        strict, name = spec.get("strict", False), spec.get("name")
        if not isinstance(strict, bool) and strict is not None:
            raise InputError(f"response_format.json_schema.strict must be true or false, got {strict!r}")
        if name is not None and not isinstance(name, str):
            raise InputError(f"response_format.json_schema.name must be a string, got {name!r}")
        return _compiled("json_schema", json.dumps(spec.get("schema", {})), bool(strict), name)
    if kind in ("grammar", "regex"):
        text = value.get(kind)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"response_format.{kind} must be a non-empty string")
        return _compiled(kind, text, False)
    raise InputError(f"response_format.type must be one of text, {', '.join(KINDS)}, got {str(kind)[:80]!r}")


def _from_text(text: str) -> Mapping | None:
    """A command line's value: "json", "text", JSON text, or a file's name."""
    if text.strip() in ("json", "json_object", "text"):
        return None if text.strip() == "text" else {"type": "json_object"}
    if text.lstrip().startswith("{"):
        return _json_value(text, "response_format")
    path = Path(text)
    try:
        data = path.read_bytes()[: MAX_FILE_BYTES + 1] if path.is_file() else None
    except OSError as e:
        raise InputError(f"response_format: cannot read {text}: {e.strerror}") from None
    if data is None:
        raise InputError(f"response_format: {text[:80]!r} is not 'json', a JSON object or a file (schema or grammar)")
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"response_format: {text} is larger than {MAX_FILE_BYTES} bytes")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"response_format: {text} is not UTF-8 text") from None
    return _json_value(content, text) if path.suffix == ".json" else {"type": "grammar", "grammar": content}


def _json_value(text: str, where: str) -> Mapping:
    """A response_format object, or a bare JSON schema wrapped as one."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise InputError(f"{where}: not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: a JSON object was expected")
    if isinstance(value.get("type"), str) and value["type"] not in SCHEMA_TYPES:
        return value  # a response_format object (an unknown type is reported as one)
    return {"type": "json_schema", "json_schema": {"schema": value, "strict": True}}


def _compiled(kind: str, source: str, strict: bool, name: str | None = None) -> ResponseFormat:
    """The format with its grammar compiled and checked by llguidance."""
    llg = guidance()
    matcher = llg.LLMatcher
    if kind in ("json_object", "json_schema"):
        grammar = matcher.grammar_from_json_schema(source, defaults={"lenient": not strict,
                                                                     "whitespace_pattern": JSON_WHITESPACE})
    elif kind == "regex":
        grammar = matcher.grammar_from_regex(source)
    else:
        grammar = matcher.grammar_from_lark(_lark(source))
    error = matcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        where = "json_schema.schema" if kind == "json_schema" else kind
        raise InputError(f"response_format.{where}: " + " ".join(error.split())[:300])
    return ResponseFormat(kind, source, grammar, strict, name)


def _lark(text: str) -> str:
    """Lark grammar text, from GBNF (llama.cpp's notation) when written in it."""
    from llguidance.gbnf_to_lark import GbnfToLarkError, any_to_lark

    try:
        return any_to_lark(text)
    except GbnfToLarkError as e:
        raise InputError(f"response_format.grammar: {' '.join(str(e).split())[:300]}") from None


def guidance() -> Any:
    """The llguidance module, or an `InputError` saying how to install it."""
    try:
        import llguidance
    except ImportError:
        raise InputError(f"structured output (response_format, tools) needs llguidance: {INSTALL}") from None
    return llguidance
