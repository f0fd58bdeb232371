"""The server against a hostile client: every malformed request (bodies too large, too deep,
with giant integers, not JSON, not an object, of the wrong Content-Type; fields of the
wrong type or out of range; unknown paths and methods) gets a 4xx with OpenAI's error body
naming the field at fault, within a bounded parse, and no traceback in the server's log; the
server still serves afterwards. A client that leaves, streamed or not, has its row
cancelled far short of its budget (the engine counts it cancelled)."""

from __future__ import annotations

import json

import pytest

from serving import MODEL, Server, sse_events, wait_until

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

HI = [{"role": "user", "content": "hi"}]
CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
BUDGET = 480  # tokens a leaving client asked for: the tiny model's context is 512


def chat(**fields) -> bytes:
    return json.dumps({"messages": HI, "max_tokens": 2, **fields}).encode()


def text(**fields) -> bytes:
    return json.dumps({"prompt": "hi", "max_tokens": 2, **fields}).encode()


# (path, body, Content-Type, status, param); None for a body means no body
BATTERY = [
    (CHAT, b"[" * 100_000 + b"]" * 100_000, "application/json", 400, None),
    (CHAT, b'{"messages": ' + b"[" * 70 + b"]" * 70 + b"}", "application/json", 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}",
     "application/json", 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "seed": -' + b"1" * 21 + b"}", "application/json",
     400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "application/json", 400, None),
    (TEXT, b'{"prompt": "' + b"a" * (4 * 1024 * 1024) + b'"}', "application/json", 413, None),
    (CHAT, b"\xff\xfe{}", "application/json", 400, None),
    (CHAT, b"", "application/json", 400, None),
    (CHAT, b"{not json", "application/json", 400, None),
    (CHAT, b"[1, 2]", "application/json", 400, None),
    (CHAT, b'"hi"', "application/json", 400, None),
    (CHAT, b"null", "application/json", 400, None),
    (CHAT, chat(), "text/plain", 415, None),
    (CHAT, chat(), "application/x-www-form-urlencoded", 415, None),
    (CHAT, json.dumps({"messages": [1, 2]}).encode(), "application/json", 400, "messages[0]"),
    (CHAT, json.dumps({"messages": []}).encode(), "application/json", 400, "messages"),
    (CHAT, json.dumps({"messages": {"role": "user"}}).encode(), "application/json", 400, "messages"),
    (CHAT, json.dumps({"messages": [{"role": 5, "content": "hi"}]}).encode(), "application/json", 400,
     "messages[0].role"),
    (CHAT, json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), "application/json", 400,
     "messages[0].role"),
    (CHAT, json.dumps({"messages": [*HI, {"role": "user", "content": None}]}).encode(), "application/json", 400,
     "messages[1].content"),
    (CHAT, json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}).encode(),
     "application/json", 400, "messages[0].content"),
    (CHAT, chat(n="1"), "application/json", 400, "n"),
    (CHAT, chat(n=17), "application/json", 400, "n"),
    (CHAT, chat(max_tokens="10"), "application/json", 400, "max_tokens"),
    (CHAT, chat(max_tokens=-1), "application/json", 400, "max_tokens"),
    (CHAT, chat(max_completion_tokens=1.5), "application/json", 400, "max_completion_tokens"),
    (CHAT, chat(temperature="hot"), "application/json", 400, "temperature"),
    (CHAT, chat(temperature=-0.5), "application/json", 400, "temperature"),
    (CHAT, chat(top_p=[1]), "application/json", 400, "top_p"),
    (CHAT, chat(top_k=True), "application/json", 400, "top_k"),
    (CHAT, chat(stop=[1, 2]), "application/json", 400, "stop"),
    (CHAT, chat(stop={"a": 1}), "application/json", 400, "stop"),
    (CHAT, chat(stop=[str(i) for i in range(40)]), "application/json", 400, "stop"),
    (CHAT, chat(logit_bias={"abc": 1}), "application/json", 400, "logit_bias"),
    (CHAT, chat(logit_bias={"\u00b2": 1}), "application/json", 400, "logit_bias"),
    (CHAT, chat(logit_bias={"9" * 500: 1}), "application/json", 400, "logit_bias"),
    (CHAT, chat(logit_bias={"5": "x"}), "application/json", 400, "logit_bias"),
    (CHAT, chat(logit_bias="5=1"), "application/json", 400, "logit_bias"),
    (CHAT, chat(logit_bias=[[5, 1]]), "application/json", 400, "logit_bias"),
    (CHAT, chat(logit_bias={"99999999": 1}), "application/json", 400, "logit_bias"),
    (CHAT, chat(seed="x"), "application/json", 400, "seed"),
    (CHAT, chat(stream="yes"), "application/json", 400, "stream"),
    (CHAT, chat(stream=True, stream_options=5), "application/json", 400, "stream_options"),
    (CHAT, chat(stream=True, stream_options={"include_usage": 1}), "application/json", 400,
     "stream_options.include_usage"),
    (CHAT, chat(model=5), "application/json", 400, "model"),
    (CHAT, chat(model="gpt-9"), "application/json", 400, "model"),
    (CHAT, chat(logprobs=1), "application/json", 400, "logprobs"),
    (CHAT, chat(logprobs=True, top_logprobs=99), "application/json", 400, "top_logprobs"),
    (CHAT, chat(num_draft_tokens="2"), "application/json", 400, "num_draft_tokens"),
    (CHAT, chat(speculative="no"), "application/json", 400, "speculative"),
    (CHAT, chat(user=5), "application/json", 400, "user"),
    (CHAT, chat(tools=[{"type": "function"}]), "application/json", 400, "tools[0].function"),
    (TEXT, json.dumps({"prompt": [True]}).encode(), "application/json", 400, "prompt"),
    (TEXT, json.dumps({"prompt": {"text": "hi"}}).encode(), "application/json", 400, "prompt"),
    (TEXT, json.dumps({"prompt": [-1]}).encode(), "application/json", 400, "prompt"),
    (TEXT, json.dumps({"prompt": ""}).encode(), "application/json", 400, "prompt"),
    (TEXT, text(logprobs=True), "application/json", 400, "logprobs"),
    (TEXT, text(echo=True), "application/json", 400, "echo"),
    (TEXT, text(best_of=2), "application/json", 400, "best_of"),
]
WRONG_ROUTES = [("GET", CHAT, 405), ("PUT", TEXT, 405), ("DELETE", "/health", 405), ("POST", "/v1/models", 405),
                ("GET", "/v1/nothing", 404), ("POST", "/", 405), ("GET", "/web/nothing.js", 404)]


@pytest.fixture(scope="module")
def server(hf_full_dir, tmp_path_factory):
    s = Server(hf_full_dir, "-k", "3", cache=tmp_path_factory.mktemp("cache"))
    yield s
    s.stop()


def openai_error(status: int, raw: bytes) -> dict:
    """The error object of an OpenAI error body (fails the test if it is not one)."""
    body = json.loads(raw)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error", body
    return body["error"]


def test_every_hostile_request_gets_an_openai_4xx_naming_its_field_and_the_server_keeps_serving(server):
    wrong = []
    for path, body, content_type, status, param in BATTERY:
        code, raw = server.raw("POST", path, body, {"Content-Type": content_type})
        error = openai_error(code, raw)
        if (code, error["param"]) != (status, param):
            wrong.append((body[:60], content_type, code, error))
    for method, path, status in WRONG_ROUTES:
        code, raw = server.raw(method, path)
        if code != status or openai_error(code, raw)["code"] not in ("not_found", "method_not_allowed"):
            wrong.append((method, path, code, raw))
    assert not wrong, wrong
    ok = server.client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, temperature=0)
    assert ok.usage.completion_tokens == 2
    assert "Traceback" not in server.log() and "ERROR" not in server.log(), server.log()


def left_early(server: Server, stream: bool) -> tuple[int, int]:
    """A request for `BUDGET` tokens whose client leaves once a few have come: the tokens its
    row generated in all, and how many rows the engine cancelled meanwhile."""
    before = server.get("/health")
    sock = server.open(TEXT, {"prompt": "Once upon a time", "max_tokens": BUDGET, "temperature": 0,
                              "num_draft_tokens": 0, "stream": stream})
    if stream:
        with sock.makefile("rb") as reader:  # the socket closes only once this has too
            assert len(sse_events(reader, 3)) == 3
    wait_until(lambda: server.get("/health")["generated_tokens"] >= before["generated_tokens"] + 3, 60,
               "the row generating")
    sock.close()
    wait_until(lambda: server.get("/health")["running"] == 0, 60, "the row leaving the batch")
    after = server.get("/health")
    return after["generated_tokens"] - before["generated_tokens"], after["cancelled"] - before["cancelled"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_client_that_leaves_has_its_row_cancelled_far_short_of_its_budget(server, stream):
    generated, cancelled = left_early(server, stream)
    assert cancelled == 1
    assert generated < BUDGET // 4, generated
    assert "Traceback" not in server.log(), server.log()
