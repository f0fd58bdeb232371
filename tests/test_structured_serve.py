"""`response_format` through the server and the real `openai` client: a JSON-schema answer
streamed and not equals the library's plain constrained decoding (greedy, speculation on
and off), grammars and regexes too; a malformed format is a 400 naming `response_format`,
and the server keeps serving."""

from __future__ import annotations

import json
import re

import pytest

import mlxspec
from conftest import make_hf_checkpoint
from serving import MODEL, Server

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytest.importorskip("llguidance")

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": "Describe a person as JSON."}]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hf_full_dir, hf_tokenizer_dir):
    draft = make_hf_checkpoint(tmp_path_factory.mktemp("draft"), hf_tokenizer_dir, seed=2, num_hidden_layers=1,
                               sliding_window=None, rope_theta=1e6)
    return hf_full_dir, draft


@pytest.fixture(scope="module")
def server(pair, tmp_path_factory):
    s = Server(pair[0], "--draft", str(pair[1]), "--no-adaptive", "-k", "3", cache=tmp_path_factory.mktemp("cache"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local(pair):
    return mlxspec.Session(*mlxspec.load(str(pair[0])))


def ask(server: Server, **values):
    return server.client.chat.completions.create(model=MODEL, messages=MESSAGES, **{"max_tokens": 40, "temperature": 0,
                                                                                    **values})


@pytest.mark.parametrize("fmt", [JSON_SCHEMA, {"type": "json_object"},
                                 {"type": "regex", "regex": "(yes|no), [a-z]{2,8}( [a-z]{2,8}){0,5}"},
                                 {"type": "grammar", "grammar": 'root ::= "[" num ("," num)* "]"\nnum ::= [0-9]{1,3}'}])
def test_a_formatted_answer_equals_plain_constrained_decoding(server, local, fmt):
    expected = local.chat(MESSAGES, max_tokens=40, response_format=fmt, speculative=False)
    spec = ask(server, response_format=fmt)
    plain = ask(server, response_format=fmt, extra_body={"num_draft_tokens": 0})
    assert spec.choices[0].message.content == plain.choices[0].message.content == expected
    assert spec.usage.speculative["drafted"] > 0  # the draft proposed under the format
    chunks = ask(server, response_format=fmt, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    if spec.choices[0].finish_reason == "stop" and fmt["type"] == "regex":
        assert re.fullmatch(fmt["regex"], expected)


def test_a_finished_json_answer_parses_and_follows_its_schema(server):
    answer = ask(server, response_format=JSON_SCHEMA, max_tokens=120)
    text = answer.choices[0].message.content
    assert text.startswith("{")
    if answer.choices[0].finish_reason == "stop":  # a random model may run out of tokens inside a string
        value = json.loads(text)
        assert set(value) == {"name", "age"} and 0 <= value["age"] <= 120 and len(value["name"]) <= 12


@pytest.mark.parametrize("fmt, needle", [
    ({"type": "xml"}, "response_format.type must be one of"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "strin"}}}, "Invalid type"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "[a-"}}}, "regex parse error"),
    ({"type": "json_schema", "json_schema": {"schema": {"$ref": "#/nowhere"}}}, "does not exist"),
    ({"type": "json_schema", "json_schema": {"schema": []}}, "'schema' object"),
    ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, "strict must be true or false"),
    ({"type": "grammar", "grammar": "start: nothing_here"}, "unknown name"),
    ({"type": "grammar", "grammar": "root ::= (("}, "response_format.grammar"),
    ({"type": "regex", "regex": "[0-9"}, "unclosed character class"),
    ({"type": "regex"}, "must be a non-empty string"),
    ("json", "must be an object"),
    ("/etc/passwd", "must be an object"),
])
def test_a_malformed_format_is_a_400_naming_response_format(server, fmt, needle):
    status, body = server.post("/v1/chat/completions", json.dumps(
        {"model": MODEL, "messages": MESSAGES, "response_format": fmt}).encode())
    assert status == 400 and body["error"]["param"] == "response_format", body
    assert needle in body["error"]["message"] and "\n" not in body["error"]["message"]
    assert ask(server, max_tokens=4).choices[0].message.content  # still serving


def test_a_logit_bias_of_minus_100_bans_a_token_under_speculation(server, local):
    free = list(local.stream_chat(MESSAGES, max_tokens=24, speculative=False))
    banned = max(set(s.token for s in free), key=[s.token for s in free].count)  # its most frequent token
    bias = {str(banned): -100}
    expected = list(local.stream_chat(MESSAGES, max_tokens=24, speculative=False, logit_bias=bias))
    assert banned not in [s.token for s in expected]
    answer = ask(server, max_tokens=24, logit_bias=bias)
    assert answer.usage.speculative["drafted"] > 0
    assert answer.choices[0].message.content == "".join(s.text for s in expected) != "".join(s.text for s in free)
