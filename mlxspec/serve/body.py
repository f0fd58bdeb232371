"""A request body read and parsed within limits: at most `max_bytes` (413 beyond), sent as
JSON (415 for another Content-Type), UTF-8, one JSON object nested at most `max_depth`
deep, integers of at most `max_digits` digits and no NaN or Infinity (400 for each). Every
refusal is a `RequestError`; a client that leaves while sending is `ClientLeft`. The parse is
bounded: the bytes are capped before it, and the parser gives up at Python's recursion
limit on deeper nesting than that."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import RequestError


@dataclass(frozen=True)
class BodyLimits:
    """How large a body may be: bytes, nesting depth of its JSON, digits of an integer."""

    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 64
    max_digits: int = 20  # 2**64 - 1, the largest seed, has 20


class ClientLeft(Exception):
    """The client went away before its body arrived: there is no one to answer."""


async def read_json(request: Request, limits: BodyLimits) -> dict[str, Any]:
    """The request's body as a JSON object, checked as the module says."""
    _check_content_type(request.headers.get("content-type"))
    data = await _read(request, limits.max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"the request body is not valid UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}")
    body = parse(text, limits)
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_kind(body)}")
    return body


def parse(text: str, limits: BodyLimits) -> Any:
    """JSON `text` within `limits` (the nesting checked after a parse the recursion limit bounds)."""

    def integer(literal: str) -> int:
        if len(literal.lstrip("-")) > limits.max_digits:
            raise RequestError(f"the request body holds an integer of {len(literal.lstrip('-'))} digits "
                               f"(at most {limits.max_digits})")
        return int(literal)

    def constant(name: str) -> None:
        raise RequestError(f"the request body is not valid JSON: {name} is not a JSON number")

    try:
        value = json.loads(text, parse_int=integer, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise RequestError(f"the request body is nested deeper than {limits.max_depth} levels") from None
    if depth(value, limits.max_depth) > limits.max_depth:
        raise RequestError(f"the request body is nested deeper than {limits.max_depth} levels")
    return value


def depth(value: Any, stop: int) -> int:
    """How deep `value`'s lists and objects nest (a scalar is 0), counted up to `stop` + 1."""
    level, layer = 0, [value] if isinstance(value, (list, dict)) else []
    while layer and level <= stop:
        level += 1
        layer = [child for item in layer for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
    return level


def _check_content_type(value: str | None) -> None:
    """JSON or nothing said; anything else (a form, plain text) is refused."""
    if value is None:
        return
    media = value.split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise RequestError(f"Content-Type must be application/json, got {value[:100]!r}", status=415,
                           code="unsupported_media_type")


async def _read(request: Request, limit: int) -> bytes:
    """The body's bytes, refused past `limit` (by its Content-Length before reading any)."""
    too_large = RequestError(f"the request body is larger than {limit} bytes", status=413, code="body_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientLeft() from None
    return b"".join(chunks)


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
