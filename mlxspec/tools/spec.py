"""What a caller may say about tools, checked in OpenAI's shapes: the `tools` list
([{"type": "function", "function": {"name", "description", "parameters"}}]), `tool_choice`
("none", "auto", "required", or {"type": "function", "function": {"name": ...}}) and the
`tool_calls` of an assistant message. Each refusal is a `ToolSpecError` whose `field` names
the value at fault the way OpenAI's `param` does ("tools[0].function.name")."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InputError

CHOICES = ("none", "auto", "required")
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # OpenAI's rule for a function's name


class ToolSpecError(InputError):
    """A malformed tool, tool choice or tool call; `field` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_tools(tools: Any, where: str = "tools") -> list[dict]:
    """`tools` as a list of {"type": "function", "function": {...}} (parameters default to
    any object); a `ToolSpecError` for anything else, or for two functions of one name."""
    if not isinstance(tools, list):
        raise ToolSpecError(f"'{where}' must be a list of function tools, got {_kind(tools)}", where)
    checked, names = [], set()
    for i, tool in enumerate(tools):
        at = f"{where}[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise ToolSpecError(f"{at} must be an object with \"type\": \"function\"", f"{at}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise ToolSpecError(f"{at}.function must be an object with a 'name'", f"{at}.function")
        name = _name(function.get("name"), f"{at}.function.name")
        if name in names:
            raise ToolSpecError(f"{at}.function.name: {name!r} names two tools", f"{at}.function.name")
        names.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolSpecError(f"{at}.function.description must be a string", f"{at}.function.description")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise ToolSpecError(f"{at}.function.parameters must be a JSON schema object, got {_kind(parameters)}",
                                f"{at}.function.parameters")
        body = {"name": name, **({"description": description} if description else {}), "parameters": parameters}
        checked.append({"type": "function", "function": body})
    return checked


def check_tool_choice(choice: Any, tools: list[dict], where: str = "tool_choice") -> str:
    """"none", "auto", "required", or the name of the one tool a call must use (which must
    be among `tools`)."""
    if choice in CHOICES:
        if choice == "required" and not tools:
            raise ToolSpecError(f"'{where}' is \"required\" but no tools are given", where)
        return choice
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(choice.get("function"), dict):
        raise ToolSpecError(f"'{where}' must be one of {', '.join(CHOICES)} or {{\"type\": \"function\", "
                            f"\"function\": {{\"name\": ...}}}}, got {str(choice)[:80]}", where)
    name = _name(choice["function"].get("name"), f"{where}.function.name")
    if name not in {t["function"]["name"] for t in tools}:
        raise ToolSpecError(f"{where}.function.name: {name!r} is not among the tools given", f"{where}.function.name")
    return name


def check_tool_calls(calls: Any, where: str) -> list[dict]:
    """An assistant message's `tool_calls`: [{"id", "type": "function", "function": {"name",
    "arguments": a JSON object as text}}]."""
    if not isinstance(calls, list) or not calls:
        raise ToolSpecError(f"{where} must be a non-empty list of tool calls", where)
    checked = []
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise ToolSpecError(f"{at} must be an object with \"type\": \"function\"", at)
        if not isinstance(call.get("id"), str):
            raise ToolSpecError(f"{at}.id must be a string", f"{at}.id")
        function = call.get("function")
        if not isinstance(function, dict):
            raise ToolSpecError(f"{at}.function must be an object with 'name' and 'arguments'", f"{at}.function")
        name = _name(function.get("name"), f"{at}.function.name")
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise ToolSpecError(f"{at}.function.arguments must be a JSON object as a string", f"{at}.function.arguments")
        checked.append({"id": call["id"], "type": "function", "function": {"name": name, "arguments": arguments}})
    return checked


def _name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ToolSpecError(f"{where} must be 1-64 letters, digits, '_', '.' or '-', got {str(name)[:80]!r}", where)
    return name


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
