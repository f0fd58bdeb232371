"""A tool call forced by a grammar: `tool_choice` "required" (a call to any of the tools)
or naming one function. The grammar (llguidance's Lark, with each function's JSON embedded
as `%json {schema}`) accepts exactly one call in the model's format, its name one of the
allowed functions and its arguments valid against that function's `parameters` schema;
generation then ends. Speculation stays exact under it (`mlxspec.structured.constraint`).
Mistral's call is forced as the bare list `[{...}]`, which the reader takes as calls."""

from __future__ import annotations

import json

from ..structured.format import JSON_WHITESPACE, ResponseFormat, response_format
from .calls import MARKERS


def forced_call(tools: list[dict], choice: str, fmt: str) -> ResponseFormat:
    """The response format of one call, in format `fmt`, to the function named `choice`, or
    to any of `tools` when `choice` is "required" (tools as `spec.check_tools` returns them)."""
    functions = [t["function"] for t in tools if choice == "required" or t["function"]["name"] == choice]
    key = "parameters" if fmt == "llama" else "arguments"
    rules = [f"call{i}: %json {json.dumps(_call_schema(f, key), ensure_ascii=False)}" for i, f in enumerate(functions)]
    call = " | ".join(f"call{i}" for i in range(len(functions)))
    if fmt == "hermes":
        start = f'start: {_literal(MARKERS["hermes"].start + chr(10))} ({call}) {_literal(chr(10) + MARKERS["hermes"].end)}'
    elif fmt == "mistral":  # the list alone: where [TOOL_CALLS] is a special token, text cannot spell it
        start = f'start: "[" ({call}) "]"'
    else:
        start = f"start: {call}"
    return response_format({"type": "grammar", "grammar": "\n".join([start, *rules])})


def _call_schema(function: dict, key: str) -> dict:
    """A call's JSON: {"name": the function's name, key: its arguments}; the parameters'
    definitions move to the root their references start from, unenforceable schema keywords
    are ignored (lenient), whitespace is bounded as in `response_format`."""
    parameters = dict(function["parameters"])
    defs = {k: parameters.pop(k) for k in ("$defs", "definitions") if k in parameters}  # "#/$defs/..." refs
    return {"type": "object", "properties": {"name": {"const": function["name"]}, key: parameters},
            "required": ["name", key], "additionalProperties": False, **defs,
            "x-guidance": {"whitespace_pattern": JSON_WHITESPACE, "lenient": True}}


def _literal(text: str) -> str:
    """A Lark string literal."""
    return json.dumps(text)
