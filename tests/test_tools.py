"""Tool calling. The parser reads each format's calls (parallel ones too), and text that only
looks like a call stays text; read chunk by chunk it gives what it gives whole, and never
lets half a marker out as text. A template that reads `tools` renders them (and the tool
history) itself; one that does not gets the fallback system message. Through the real
`openai` client against a server with a draft: a forced call (named, or "required") gives
`tool_calls` whose arguments validate against the function's schema, streamed and not,
with finish_reason "tool_calls", the same with speculation as without (greedy); a tool
result is answered; malformed tools, tool choices and tool messages get a 400 naming the
field, and the server keeps serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_hf_checkpoint
from mlxspec.text import ChatTemplate
from mlxspec.tools import ToolCall, ToolCallReader, ToolSpecError, check_tool_choice, check_tools, parse_tool_calls
from mlxspec.tools.prompt import FALLBACK, call_format, chat_text
from serving import MODEL, Server

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "unit", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

# Qwen 2.5's way with tools, shortened: tools in the system turn, calls and results in Hermes tags.
QWEN_STYLE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n"
    "</tools>\nCall a function as <tool_call>\n{\"name\": <name>, \"arguments\": <args>}\n</tool_call><|im_end|>\n"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}\n<|im_start|>assistant\n{{ m.content }}"
    "{%- for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>"
    "{%- elif m.role == 'tool' %}\n<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>"
    "{%- else %}\n<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}\n<|im_start|>assistant\n{% endif %}"
)
PLAIN = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Oslo", "unit": "celsius", "days": 2}'}}
HISTORY = [{"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
           {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'}]


def named(calls: list[ToolCall]) -> list[tuple[str, dict]]:
    return [(c.name, c.arguments) for c in calls]


@pytest.mark.parametrize("fmt, text, content, calls", [
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', None, [("f", {"a": 1})]),
    ("hermes", 'Let me look.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
               '<tool_call>{"name": "g", "arguments": "{\\"b\\": [2]}"}</tool_call>', "Let me look.",
     [("f", {}), ("g", {"b": [2]})]),
    ("hermes", '<tool_call>{"name": "f", "arguments": {"a": </tool_call> then', '<tool_call>{"name": "f", '
               '"arguments": {"a": </tool_call> then', []),
    ("hermes", '<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
    ("hermes", '<tool_call>{"name": "f", "arguments": {"a": 1}}', None, [("f", {"a": 1})]),  # cut before its end tag
    ("hermes", "a <tool_call without end", "a <tool_call without end", []),
    ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]', None,
     [("f", {"a": 1}), ("g", {})]),
    ("mistral", 'Sure. [TOOL_CALLS]f[ARGS]{"a": 1}g[ARGS]{"b": "x"}', "Sure.", [("f", {"a": 1}), ("g", {"b": "x"})]),
    ("mistral", "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {", "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {", []),
    ("llama", '{"name": "f", "parameters": {"a": 1}}', None, [("f", {"a": 1})]),
    ("llama", ' {"name": "f", "parameters": {}}; {"name": "g", "parameters": {"b": 2}}', None, [("f", {}), ("g", {"b": 2})]),
    ("llama", '<|python_tag|>{"name": "f", "parameters": {}}', None, [("f", {})]),
    ("llama", '{"answer": 42}', '{"answer": 42}', []),
    ("llama", '{"name": "f", "parameters": {', '{"name": "f", "parameters": {', []),
    ("llama", "It is sunny.", "It is sunny.", []),
])
def test_each_format_gives_its_calls_and_a_broken_call_stays_text(fmt, text, content, calls):
    got_content, got_calls = parse_tool_calls(text, fmt)
    assert (got_content, named(got_calls)) == (content, calls)
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in got_calls)
    assert len({c.id for c in got_calls}) == len(got_calls)


@pytest.mark.parametrize("fmt, text", [
    ("hermes", 'Hi there <tool_call>\n{"name": "f", "arguments": {"a": "<tool_call>"}}\n</tool_call> <tool_cal'),
    ("hermes", "a < b, and <tool_ is not a tag; <tool_call>{oops}</tool_call> ok"),
    ("mistral", 'Sure [TOOL_CALLS]f[ARGS]{"a": 1}'),
    ("llama", '  {"name": "f", "parameters": {"a": [1, 2]}}'),
])
def test_read_piece_by_piece_the_reader_gives_what_it_gives_whole(fmt, text):
    whole = parse_tool_calls(text, fmt)
    for size in (1, 2, 5):
        reader, pieces = ToolCallReader(fmt), []
        for at in range(0, len(text), size):
            pieces += reader.feed(text[at:at + size])
        pieces += reader.close()
        calls = [p for p in pieces if isinstance(p, ToolCall)]
        content = "".join(p for p in pieces if isinstance(p, str))
        assert named(calls) == named(whole[1])
        assert (content.strip() or None if calls else content) == whole[0]


def test_half_a_marker_is_held_until_the_text_says_what_it_is():
    reader = ToolCallReader("hermes")
    assert reader.feed("Hello <tool") == ["Hello"]
    assert reader.feed("box> here") == [" <toolbox> here"]
    assert reader.feed(" <tool_") == []
    assert named(reader.feed('call>{"name": "f", "arguments": {}}</tool_call>')) == [("f", {})]
    assert reader.close() == []


@pytest.mark.parametrize("tools, field", [
    ({"type": "function"}, "tools"),
    ([{"type": "function"}], "tools[0].function"),
    ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0].type"),
    ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "f", "description": 3}}], "tools[0].function.description"),
    ([WEATHER, WEATHER], "tools[1].function.name"),
])
def test_malformed_tools_name_the_field(tools, field):
    with pytest.raises(ToolSpecError) as e:
        check_tools(tools)
    assert e.value.field == field


def test_tool_choice_is_checked_against_the_tools():
    tools = check_tools(TOOLS)
    assert [check_tool_choice(c, tools) for c in ("none", "auto", "required")] == ["none", "auto", "required"]
    assert check_tool_choice({"type": "function", "function": {"name": "get_time"}}, tools) == "get_time"
    for choice, field in [("always", "tool_choice"), ({"type": "function", "function": {"name": "nope"}},
                                                      "tool_choice.function.name"), ({"type": "function"}, "tool_choice")]:
        with pytest.raises(ToolSpecError) as e:
            check_tool_choice(choice, tools)
        assert e.value.field == field
    with pytest.raises(ToolSpecError):
        check_tool_choice("required", [])


def test_a_template_that_reads_tools_renders_them_and_the_history():
    template = ChatTemplate(QWEN_STYLE, {})
    text = chat_text(template, HISTORY, TOOLS)
    assert json.dumps(check_tools(TOOLS)[0], ensure_ascii=False) in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius", "days": 2}}' in text
    assert "<tool_response>\n{\"temp\": 3}\n</tool_response>" in text and text.endswith("<|im_start|>assistant\n")
    assert call_format(template) == "hermes" and "# Tools" not in chat_text(template, HISTORY[:1])


def test_a_template_without_tools_gets_the_fallback_system_message():
    template = ChatTemplate(PLAIN, {})
    assert not template.reads("tools")
    text = chat_text(template, [{"role": "system", "content": "Be brief."}, *HISTORY], TOOLS)
    system = text.split("\n<|user|>")[0]
    assert system.startswith("<|system|>Be brief.\n\n" + FALLBACK.split("<tools>")[0])
    assert all(json.dumps(t, ensure_ascii=False) in system for t in check_tools(TOOLS))
    assert ('<|assistant|><tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius", '
            '"days": 2}}\n</tool_call>\n') in text
    assert '<|user|><tool_response>\n{"temp": 3}\n</tool_response>\n<|assistant|>' in text
    assert chat_text(template, HISTORY[:1]) == "<|user|>Weather in Oslo?\n<|assistant|>"  # no tools: as before


# --- the server ---------------------------------------------------------------------------------------------

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory, hf_tokenizer_dir) -> tuple[Path, Path]:
    """A tiny target and draft whose tokenizer ships a Qwen-style template that reads tools."""
    tokenizer = tmp_path_factory.mktemp("qwen-tokenizer")
    for f in hf_tokenizer_dir.iterdir():
        shutil.copy(f, tokenizer / f.name)
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": QWEN_STYLE}))
    shape = dict(sliding_window=None, rope_theta=1e6)
    target = make_hf_checkpoint(tmp_path_factory.mktemp("target"), tokenizer, seed=2, **shape)
    draft = make_hf_checkpoint(tmp_path_factory.mktemp("draft"), tokenizer, seed=2, num_hidden_layers=1, **shape)
    return target, draft


@pytest.fixture(scope="module")
def server(qwen_pair, tmp_path_factory):
    target, draft = qwen_pair
    s = Server(target, "--draft", str(draft), "--no-adaptive", "-k", "3", cache=tmp_path_factory.mktemp("cache"))
    yield s
    s.stop()


def ask(server: Server, choice, stream: bool = False, **extra):
    return server.client.chat.completions.create(model=MODEL, messages=HISTORY[:1], tools=TOOLS, tool_choice=choice,
                                                 max_tokens=120, temperature=0, stream=stream, **extra)


def valid(name: str, arguments: str) -> dict:
    value = json.loads(arguments)
    jsonschema.validate(value, SCHEMAS[name])
    return value


def streamed_calls(chunks) -> tuple[list[tuple[str, str, str]], str | None, str]:
    """(id, name, arguments) per call index from streamed deltas, the last finish_reason, the content."""
    calls: dict[int, list[str]] = {}
    for c in chunks:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(d.index, ["", "", ""])
            entry[0] += d.id or ""
            entry[1] += (d.function.name or "") if d.function else ""
            entry[2] += (d.function.arguments or "") if d.function else ""
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return [tuple(calls[i]) for i in sorted(calls)], chunks[-1].choices[0].finish_reason, content


def test_a_forced_named_call_is_valid_streamed_and_not(server):
    choice = {"type": "function", "function": {"name": "get_time"}}
    whole = ask(server, choice)
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content is None, whole
    (call,) = whole.choices[0].message.tool_calls
    assert call.type == "function" and call.function.name == "get_time" and call.id.startswith("call_")
    valid("get_time", call.function.arguments)
    chunks = list(ask(server, choice, stream=True))
    calls, finish, content = streamed_calls(chunks)
    assert finish == "tool_calls" and content == "", (finish, content, calls)
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])  # only the last chunk ends the reply
    assert [(name, json.loads(args)) for _, name, args in calls] == [("get_time", json.loads(call.function.arguments))]
    assert calls[0][0].startswith("call_")


def test_required_calls_one_of_the_tools_and_speculation_does_not_change_it(server):
    whole = ask(server, "required")
    (call,) = whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == "tool_calls" and call.function.name in SCHEMAS
    valid(call.function.name, call.function.arguments)
    assert whole.usage.speculative["drafted"] > 0
    plain = ask(server, "required", extra_body={"num_draft_tokens": 0})
    (alone,) = plain.choices[0].message.tool_calls
    assert (alone.function.name, alone.function.arguments) == (call.function.name, call.function.arguments)
    named_call = ask(server, {"type": "function", "function": {"name": "get_weather"}})
    valid("get_weather", named_call.choices[0].message.tool_calls[0].function.arguments)


def test_a_tool_result_is_answered_in_text(server):
    answer = server.client.chat.completions.create(model=MODEL, messages=HISTORY, tools=TOOLS, max_tokens=8,
                                                   temperature=0)
    assert answer.choices[0].message.content and answer.choices[0].finish_reason in ("length", "stop")
    none = server.client.chat.completions.create(model=MODEL, messages=HISTORY, tools=TOOLS, tool_choice="none",
                                                 max_tokens=8, temperature=0)
    assert none.choices[0].message.tool_calls is None


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": HISTORY[:1], "max_tokens": 4, **fields}


@pytest.mark.parametrize("body, param", [
    (chat(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name"),
    (chat(tools={"name": "f"}), "tools"),
    (chat(tools=TOOLS, tool_choice="sometimes"), "tool_choice"),
    (chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice.function.name"),
    (chat(tool_choice="required"), "tool_choice"),
    (chat(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "tool_choice"),
    (chat(tools=TOOLS, parallel_tool_calls="yes"), "parallel_tool_calls"),
    (chat(messages=[*HISTORY[:2], {"role": "tool", "content": "3"}]), "messages[2].tool_call_id"),
    (chat(messages=[HISTORY[0], {"role": "assistant", "content": None, "tool_calls": [{**CALL, "id": 5}]}]),
     "messages[1].tool_calls[0].id"),
    (chat(messages=[HISTORY[0], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "get_weather", "arguments": "{not json"}}]}]),
     "messages[1].tool_calls[0].function.arguments"),
    (chat(messages=[HISTORY[0], {"role": "assistant", "content": None}]), "messages[1].content"),
])
def test_malformed_tool_requests_get_400_naming_the_field_and_the_server_keeps_serving(server, body, param):
    status, answer = server.post("/v1/chat/completions", json.dumps(body).encode())
    assert status == 400 and answer["error"]["param"] == param, answer
    assert server.post("/v1/chat/completions", json.dumps(chat()).encode())[0] == 200


def test_the_library_offers_the_tools_through_the_template_and_calls_as_the_server_does(server, qwen_pair):
    import mlxspec
    from mlxspec.tools.grammar import forced_call

    target, tokenizer = mlxspec.load(str(qwen_pair[0]))
    session = mlxspec.Session(target, tokenizer)
    assert tokenizer.apply_chat(HISTORY, TOOLS) == tokenizer.encode_special(chat_text(tokenizer.chat_format(), HISTORY,
                                                                                      TOOLS))
    forced = forced_call(check_tools(TOOLS), "get_weather", "hermes")
    text = session.chat(HISTORY[:1], tools=TOOLS, max_tokens=120, response_format=forced)
    content, (call,) = parse_tool_calls(text)
    served = ask(server, {"type": "function", "function": {"name": "get_weather"}}).choices[0].message.tool_calls[0]
    assert content is None and (call.name, call.arguments) == (served.function.name, json.loads(served.function.arguments))
