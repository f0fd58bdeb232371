"""A request body's fields, each checked for its type and range before anything is queued:
the prompt (chat `messages`, or a completion's `prompt`) and what the request asks
(`Asked`). A wrong type or value is a `RequestError` (400) naming the field (`param`).
Options go through the library's own checks (`GenerationOptions`) one field at a time, so
their messages are the library's and the command line's. Beyond OpenAI's fields a client
may send every other `GenerationOptions` field (`top_k`, `repetition_penalty`, ...),
`num_draft_tokens` (the most drafted per step for this request, up to the server's `-k`;
0: no speculation) and `speculative`. `n` (1..16 choices, at most the server's --max-batch)
is a `GenerationOptions` field like the others. OpenAI fields this server does not implement are
refused when they ask for something (`echo`, `best_of` > 1, `functions`, a completion's
`tools`, ...); unknown fields are ignored. A chat's tools are `tools.py`'s; its messages
may carry tool results (`role: tool`) and an assistant's `tool_calls`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ..engine.options import GenerationOptions
from ..errors import InputError
from ..text.unicode import check_text
from ..tools import ToolSpecError, check_tool_calls
from ..validate import is_int
from .errors import RequestError

ROLES = ("system", "user", "assistant", "tool")
CHAT_TOOLS = ("tools", "tool_choice")  # a chat's, checked by tools.py
# OpenAI fields not implemented here, and the values that ask for nothing
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "echo": lambda v: v is False, "best_of": lambda v: v == 1 and is_int(v), "suffix": lambda v: v == "",
    "tools": lambda v: v == [], "functions": lambda v: v == [], "tool_choice": lambda v: v in ("none", "auto"),
    "function_call": lambda v: v in ("none", "auto"),
}


@dataclass(frozen=True)
class Asked:
    """What a request body asks for: its options, how far it may speculate, and how it is answered."""

    options: GenerationOptions
    speculative: bool = True
    num_draft_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False


def typed(body: dict, name: str, check: Callable[[Any], bool], what: str, default: Any = None,
          where: str = "") -> Any:
    """`body[name]` (`default` when absent or null), or a `RequestError` saying it must be
    `what` (naming it `where` + `name`)."""
    value = body.get(name)
    if value is None:
        return default
    if not check(value):
        raise RequestError(f"'{where}{name}' must be {what}, got {_short(value)}", where + name)
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def asked(body: dict, defaults: GenerationOptions, chat: bool, k_max: int | None = None,
          vocab: int | None = None) -> Asked:
    """What `body` asks, over the server's `defaults`; `k_max` (the server's `-k`) bounds
    `num_draft_tokens` and `vocab` the token ids of `logit_bias`."""
    for name, asks_nothing in UNSUPPORTED.items():
        if chat and name in CHAT_TOOLS:
            continue
        if body.get(name) is not None and not asks_nothing(body[name]):
            raise RequestError(f"'{name}' is not supported by this server, got {_short(body[name])}", name)
    typed(body, "user", lambda v: isinstance(v, str), "a string")
    stream = typed(body, "stream", _is_bool, "true or false", False)
    usage = typed(body, "stream_options", lambda v: isinstance(v, dict), "an object", {})
    include_usage = typed(usage, "include_usage", _is_bool, "true or false", False, "stream_options.")
    k = typed(body, "num_draft_tokens", is_int, "an integer")
    if k is not None and k_max is not None and not 0 <= k <= k_max:
        raise RequestError(f"num_draft_tokens must be an integer in 0..{k_max} (the session's), got {k}",
                           "num_draft_tokens")
    return Asked(_options(body, defaults, chat, vocab), typed(body, "speculative", _is_bool, "true or false", True),
                 k, bool(stream), bool(include_usage))


def _options(body: dict, defaults: GenerationOptions, chat: bool, vocab: int | None) -> GenerationOptions:
    """Every `GenerationOptions` field by its name (or OpenAI's other spelling of it)."""
    values = {}
    for f in fields(GenerationOptions):
        key = next((k for k in (*f.metadata["json"], f.name) if body.get(k) is not None), None)
        if f.name == "logprobs" or key is None:
            continue
        if f.name == "logit_bias":
            _check_logit_bias(body[key], vocab)
        if f.name == "response_format" and not isinstance(body[key], dict):  # text would name a file to read
            raise RequestError(f"response_format must be an object such as {{\"type\": \"json_object\"}}, "
                               f"got {_short(body[key])}", key)
        values[f.name] = _checked(defaults, f.name, body[key], key)
    logprobs = _logprobs(body, chat)
    if logprobs is not None:
        values["logprobs"] = _checked(defaults, "logprobs", *logprobs)
    return defaults.with_values(values)


def _checked(defaults: GenerationOptions, name: str, value: Any, key: str) -> Any:
    """`value` for option `name` as the library checks and normalises it (a response format
    compiled once, here), the error naming the body's `key`."""
    try:
        return getattr(defaults.with_values({name: value}), name)
    except InputError as e:
        raise RequestError(str(e), key) from None


def _logprobs(body: dict, chat: bool) -> tuple[Any, str] | None:
    """Chat's `logprobs: true` with `top_logprobs: N`, or the legacy completions' `logprobs: N`,
    with the key it came from."""
    if not chat:
        return None if body.get("logprobs") is None else (body["logprobs"], "logprobs")
    if not typed(body, "logprobs", _is_bool, "true or false", False):
        typed(body, "top_logprobs", is_int, "an integer")
        return None
    return typed(body, "top_logprobs", is_int, "an integer", 0), "top_logprobs"


def _check_logit_bias(bias: Any, vocab: int | None) -> None:
    """An object of token ids (decimal strings) to numbers, the ids in the vocabulary."""
    if not isinstance(bias, dict):
        raise RequestError(f"logit_bias must be an object mapping token ids to numbers, got {_short(bias)}",
                           "logit_bias")
    for token in bias:
        if not (token.isascii() and token.isdigit() and len(token) <= 10):
            raise RequestError(f"logit_bias: a token id must be an integer >= 0, got {_short(token)}", "logit_bias")
        if vocab is not None and int(token) >= vocab:
            raise RequestError(f"logit_bias: token id {token} is outside the vocabulary (0..{vocab - 1})",
                               "logit_bias")


def chat_prompt(body: dict) -> list[dict]:
    """The messages of a chat request, each {role, content} with text content (content given
    as parts, [{"type": "text", "text": ...}], is joined into its text)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    return [_message(m, i) for i, m in enumerate(messages)]


def _message(message: Any, index: int) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise RequestError(f"{where} must be a {{role, content}} object, got {_short(message)}", where)
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {_short(role)}", f"{where}.role")
    typed(message, "name", lambda v: isinstance(v, str), "a string", where=f"{where}.")
    extra = _tool_fields(message, role, where)
    if content is None and extra.get("tool_calls"):
        return {"role": role, "content": None, **extra}
    if isinstance(content, list):
        content = _text_parts(content, f"{where}.content")
    if not isinstance(content, str):
        raise RequestError(f"{where}.content must be a string or a list of text parts, got {_short(content)}",
                           f"{where}.content")
    return {"role": role, "content": _text(content, f"{where}.content"), **extra}


def _tool_fields(message: dict, role: str, where: str) -> dict:
    """A tool result's `tool_call_id`, an assistant's `tool_calls` (checked)."""
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str):
            raise RequestError(f"{where}.tool_call_id must be a string (the id of the call answered)",
                               f"{where}.tool_call_id")
        return {"tool_call_id": call_id}
    if role == "assistant" and message.get("tool_calls") is not None:
        return {"tool_calls": fielded(check_tool_calls, message["tool_calls"], f"{where}.tool_calls")}
    return {}


def fielded(check: Callable[..., Any], *args: Any) -> Any:
    """`check(*args)`, its `ToolSpecError` a 400 naming the field."""
    try:
        return check(*args)
    except ToolSpecError as e:
        raise RequestError(str(e), e.field) from None


def _text_parts(parts: list, where: str) -> str:
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        raise RequestError(f"{where}: only text content parts are supported (type 'text')", where)
    return "".join(p["text"] for p in parts)


def completion_prompt(body: dict) -> str | list[int]:
    """The prompt of a completion request: text or token ids (a list of one is unwrapped)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return _text(prompt, "prompt")
    if isinstance(prompt, list) and prompt and all(is_int(t) for t in prompt):
        return prompt
    raise RequestError("'prompt' must be a string or a list of token ids (one prompt per request), "
                       f"got {_short(prompt)}", "prompt")


def _text(text: str, where: str) -> str:
    try:
        return check_text(text, where)
    except InputError as e:
        raise RequestError(str(e), where) from None


def _short(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters (a value may be megabytes long)."""
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 100 else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."
