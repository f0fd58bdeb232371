"""Tools through the real `openai` client against a server with a draft whose template reads
tools: a forced call (named, or "required") gives `tool_calls` whose arguments validate
against the function's schema, streamed and not, with finish_reason "tool_calls" (on the
last chunk only), the same with speculation as without (greedy) and as the library's; a tool
result is answered in text; malformed tools, tool choices and tool messages get a 400 naming
the field, and the server keeps serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_hf_checkpoint, smollm2_or_skip
from mlxspec.tools import check_tools, parse_tool_calls
from mlxspec.tools.prompt import chat_text
from serving import MODEL, Server
from test_tools import CALL, HISTORY, QWEN_STYLE, SCHEMAS, TOOLS

jsonschema = pytest.importorskip("jsonschema")
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


def test_each_of_n_choices_reads_its_own_calls(server):
    whole = ask(server, "required", n=2)
    assert [c.finish_reason for c in whole.choices] == ["tool_calls"] * 2
    for choice in whole.choices:
        (call,) = choice.message.tool_calls
        valid(call.function.name, call.function.arguments)
    chunks = list(ask(server, "required", stream=True, n=2))
    for index, choice in enumerate(whole.choices):
        own = [c for c in chunks if c.choices and c.choices[0].index == index]
        calls, finish, _ = streamed_calls(own)
        assert finish == "tool_calls"
        assert [c[1:] for c in calls] == [(choice.message.tool_calls[0].function.name,
                                           choice.message.tool_calls[0].function.arguments)]


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


def test_the_demo_server_makes_a_forced_call_streamed_and_not(tmp_path):
    """SmolLM2's template does not read tools: the fallback prompt, the demo's feature draft."""
    smollm2_or_skip()
    demo = Server(None, "--demo", cache=tmp_path)
    try:
        kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "What is the time in Paris?"}], tools=TOOLS,
                      tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=40, temperature=0)
        whole = demo.client.chat.completions.create(**kwargs)
        (call,) = whole.choices[0].message.tool_calls
        assert whole.choices[0].finish_reason == "tool_calls" and whole.usage.speculative["drafted"] > 0
        calls, finish, content = streamed_calls(list(demo.client.chat.completions.create(**kwargs, stream=True)))
        assert finish == "tool_calls" and [c[1:] for c in calls] == [("get_time", call.function.arguments)]
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_time"])
    finally:
        demo.stop()
