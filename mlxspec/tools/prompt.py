"""Tools in the prompt. A chat template that reads `tools` renders them itself, as
transformers calls it (`tools=[{"type": "function", "function": {...}}]`), and reads
earlier calls from the messages: assistant messages with `tool_calls` (their `arguments`
handed over as objects, as vLLM does: templates write them with `tojson`) and `role: tool`
results.

A template that does not read `tools` (SmolLM2's, Mistral's plain instruct format) gets the
fallback LM Studio and others use: a system message describing the tools and asking for
Hermes-style calls, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; earlier
calls are written into the assistant's text in that format, and tool results become a user
turn of `<tool_response>` blocks (such templates know only system, user and assistant)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..text.chat import ChatTemplate, Message
from .calls import template_format
from .spec import check_tools

FALLBACK = (
    "You can call functions to help with the user's request. The functions, as JSON schemas:\n<tools>\n{tools}\n"
    "</tools>\nTo call a function, reply with only\n<tool_call>\n{{\"name\": <function name>, \"arguments\": "
    "<arguments as a JSON object>}}\n</tool_call>\n(one such block per call). Otherwise, answer in text."
)


def reads_tools(template: ChatTemplate) -> bool:
    """Whether `template` renders tools itself."""
    return template.reads("tools")


def call_format(template: ChatTemplate) -> str:
    """The format the model will write its calls in: its template's, or the fallback's ("hermes")."""
    return template_format(template.source) if reads_tools(template) else "hermes"


def chat_text(template: ChatTemplate, messages: Sequence[Message], tools: list[dict] | None = None) -> str:
    """The prompt for `messages` offering `tools` (checked OpenAI function tools; None or []:
    none), the assistant's turn opened."""
    tools = check_tools(tools) if tools else None
    history = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if not tools and not history:
        return template.render(messages)
    if reads_tools(template):
        return template.render([_for_template(m) for m in messages], **({"tools": tools} if tools else {}))
    text = template.render(fallback_messages(messages, tools))
    if tools and "</tools>" not in text:  # the template drops system messages (Mistral's instruct format)
        text = template.render(fallback_messages(messages, tools, in_user_turn=True))
    return text


def _for_template(message: Message) -> Message:
    """A message as chat templates read it: `arguments` as objects, no null content."""
    if not message.get("tool_calls"):
        return message
    calls = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"]["arguments"])}}
             for c in message["tool_calls"]]
    return {**message, "content": message.get("content") or "", "tool_calls": calls}


def _arguments(arguments: Any) -> Any:
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return arguments


def fallback_messages(messages: Sequence[Message], tools: list[dict] | None,
                      in_user_turn: bool = False) -> list[Message]:
    """The conversation for a template without tools: the tools described in the system
    message (or, `in_user_turn`, before the first user turn's text), calls written into the
    assistant's text, tool results as user turns."""
    out: list[Message] = []
    for m in messages:
        if m.get("role") == "tool":
            block = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1].get("tool_result"):
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block, "tool_result": True})
        elif m.get("tool_calls"):
            calls = "\n".join(f"<tool_call>\n{json.dumps(_call(c), ensure_ascii=False)}\n</tool_call>"
                              for c in m["tool_calls"])
            out.append({"role": m["role"], "content": ((m.get("content") or "") + "\n" + calls).lstrip("\n")})
        else:
            out.append(dict(m))
    out = [{k: v for k, v in m.items() if k in ("role", "content")} for m in out]
    if tools:
        described = FALLBACK.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if in_user_turn:
            first = next((i for i, m in enumerate(out) if m["role"] == "user"), 0)
            out[first] = {**out[first], "content": described + "\n\n" + out[first]["content"]}
        elif out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + described}
        else:
            out.insert(0, {"role": "system", "content": described})
    return out


def _call(call: dict) -> dict:
    return {"name": call["function"]["name"], "arguments": _arguments(call["function"]["arguments"])}
