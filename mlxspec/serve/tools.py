"""Tools in a chat request: `tools` and `tool_choice` checked (400 naming the field),
offered through the model's chat template (`mlxspec.tools.prompt`), a forced call
("required", or one function named) held to a grammar as the request's `response_format`
(so a request may not set both), and the reply's calls given back as OpenAI's `tool_calls`,
whole or streamed (`ToolReply`). `tool_choice: "none"` offers no tools."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError
from ..text import Tokenizer
from ..tools import ToolCall, ToolCallReader, check_tool_choice, check_tools
from ..tools.grammar import forced_call
from ..tools.prompt import call_format
from ..tools.reader import parse_tool_calls
from .errors import RequestError
from .request import Asked, fielded


@dataclass(frozen=True)
class ToolUse:
    """The tools a request offers, what `tool_choice` asks, and the format calls come in."""

    tools: list[dict]
    choice: str  # "auto", "required", or the one function's name
    fmt: str


def tool_use(body: dict, tokenizer: Tokenizer | None) -> ToolUse | None:
    """What a chat body asks of tools (None: none offered)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise RequestError(f"'parallel_tool_calls' must be true or false, got {str(parallel)[:80]}",
                           "parallel_tool_calls")
    checked = fielded(check_tools, tools) if tools is not None else []
    choice = fielded(check_tool_choice, choice if choice is not None else "auto", checked)
    if not checked or choice == "none":
        return None
    if tokenizer is None:
        raise RequestError("tools need the model's tokenizer (this server has none)", "tools")
    return ToolUse(checked, choice, call_format(tokenizer.chat_format()))


def with_tools(use: ToolUse | None, wants: Asked, tokenizer: Tokenizer | None, messages: list[dict]) -> tuple[Asked, Any]:
    """The request's options and prompt with its tools: the prompt as token ids from the
    template, a forced call as the response format."""
    if use is None:
        return wants, messages
    if use.choice != "auto":
        if wants.options.response_format is not None:
            raise RequestError("a forced 'tool_choice' cannot be combined with 'response_format'", "tool_choice")
        try:
            forced = forced_call(use.tools, use.choice, use.fmt)
        except InputError as e:
            raise RequestError(f"tools: a call cannot be held to these schemas ({e})", "tools") from None
        wants = replace(wants, options=wants.options.with_values({"response_format": forced}))
    return wants, tokenizer.apply_chat(messages, use.tools)


class ToolReply:
    """A choice's calls read out of its text: whole (`shape_whole`) or chunk by chunk (`shape`)."""

    def __init__(self, fmt: str) -> None:
        self.fmt, self.reader, self.calls = fmt, ToolCallReader(fmt), 0

    @staticmethod
    def shape_whole(completion: dict, replies: list[ToolReply]) -> dict:
        """A whole chat completion with each choice's calls as `message.tool_calls` (content
        None when there is no other text) and finish_reason "tool_calls"."""
        for choice, reply in zip(completion["choices"], replies):
            content, calls = parse_tool_calls(choice["message"]["content"], reply.fmt)
            if calls:
                choice["message"] = {"role": "assistant", "content": content,
                                     "tool_calls": [call.as_openai() for call in calls]}
                choice["finish_reason"] = _finish(choice["finish_reason"])
        return completion

    def shape(self, chunk: dict) -> list[dict]:
        """The chunks to send for one streamed chunk: its text less what may begin a call,
        then each call completed (id, type and name, then its arguments); the last chunk
        carries the finish_reason ("tool_calls" when calls were made)."""
        choice = chunk["choices"][0]
        finish = choice["finish_reason"]
        pieces = self.reader.feed(choice["delta"].get("content") or "")
        if finish is not None:
            pieces += self.reader.close()
        text = "".join(p for p in pieces if isinstance(p, str))
        calls = [p for p in pieces if isinstance(p, ToolCall)]
        out = []
        if text or choice.get("logprobs") or (finish is not None and not calls and not self.calls):
            out.append(_with(chunk, {"content": text} if text else {}, None, choice.get("logprobs")))
        for call in calls:
            head = {"index": self.calls, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}
            out.append(_with(chunk, {"tool_calls": [head]}))
            out.append(_with(chunk, {"tool_calls": [{"index": self.calls,
                                                     "function": {"arguments": call.arguments_json}}]}))
            self.calls += 1
        if finish is not None:
            if not out:
                out.append(_with(chunk, {}))
            out[-1]["choices"][0]["finish_reason"] = _finish(finish) if self.calls else finish
        return out


def _with(chunk: dict, delta: dict, finish: str | None = None, logprobs: dict | None = None) -> dict:
    """A copy of a streamed chat chunk with another delta."""
    choice = {**chunk["choices"][0], "delta": delta, "finish_reason": finish, "logprobs": logprobs}
    return {**chunk, "choices": [choice]}


def _finish(reason: str | None) -> str | None:
    """A reply that made calls ends for them, unless it was cut short."""
    return "tool_calls" if reason == "stop" else reason
