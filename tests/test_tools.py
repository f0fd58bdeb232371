"""Tool calling in the library. The parser reads each format's calls (parallel ones too),
and text that only looks like a call stays text; read chunk by chunk it gives what it gives
whole, and never lets half a marker out as text. A template that reads `tools` renders them
(and the tool history) itself; one that does not gets the fallback system message (in the
first user turn where the template drops system messages). Malformed tools and tool
choices name the field. The server's side: test_serve_tools.py."""

from __future__ import annotations

import json

import pytest

from mlxspec.text import ChatTemplate
from mlxspec.tools import ToolCall, ToolCallReader, ToolSpecError, check_tool_choice, check_tools, parse_tool_calls
from mlxspec.tools.prompt import FALLBACK, call_format, chat_text

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
    ("mistral", ' [{"name": "f", "arguments": {"a": 1}}]', None, [("f", {"a": 1})]),  # its marker a special token
    ("mistral", "[1] is a reference", "[1] is a reference", []),
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
    ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {}}]'),
    ("mistral", ' [{"name": "f", "arguments": {}}]'),
    ("mistral", "[1] and [TOOL] are text"),
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


def test_a_template_that_drops_system_messages_gets_the_tools_in_the_first_user_turn():
    from mlxspec.text.chat import MISTRAL_INSTRUCT

    text = chat_text(ChatTemplate(MISTRAL_INSTRUCT, {"bos_token": "<s>", "eos_token": "</s>"}), HISTORY, TOOLS)
    assert text.startswith("<s>[INST] " + FALLBACK.split("<tools>")[0]) and "</tools>" in text
    assert "Weather in Oslo? [/INST]<tool_call>" in text and "[INST] <tool_response>" in text


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama"])
def test_a_forced_calls_grammar_compiles_for_each_format_and_its_call_parses(fmt):
    from mlxspec.tools.grammar import forced_call

    llguidance = pytest.importorskip("llguidance")
    tools = check_tools(TOOLS)
    key = "parameters" if fmt == "llama" else "arguments"
    call = json.dumps({"name": "get_time", key: {"zone": "UTC"}})
    text = {"hermes": f"<tool_call>\n{call}\n</tool_call>", "mistral": f"[{call}]", "llama": call}[fmt]
    for choice in ("required", "get_time"):
        grammar = forced_call(tools, choice, fmt).grammar
        matcher = llguidance.LLMatcher(llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes())), grammar)
        assert matcher.consume_tokens(list(text.encode())) and matcher.is_accepting(), (fmt, choice)
    assert named(parse_tool_calls(text, fmt)[1]) == [("get_time", {"zone": "UTC"})]
    wrong = forced_call(tools, "get_weather", fmt).grammar
    matcher = llguidance.LLMatcher(llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes())), wrong)
    assert not (matcher.consume_tokens(list(text.encode())) and matcher.is_accepting())


class _Bytes:
    """A tokenizer of one token per byte (and EOS 256), for checking text against a grammar."""

    tokens = [bytes([i]) for i in range(256)] + [b""]
    eos_token_id, bos_token_id, special_token_ids = 256, None, [256]

    def __call__(self, text):
        return list(text.encode() if isinstance(text, str) else text)
