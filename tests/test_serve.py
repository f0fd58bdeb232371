"""`mlxspec serve` through the real `openai` client, against a server each test module
starts on loopback and stops: chat and text completions, streamed and not; 8 concurrent
clients each get exactly their greedy text alone (speculation on inside the batch); a
cancelled stream frees its row; bad requests get a 400 (a full queue a 429) with an
OpenAI error body, and the server keeps serving."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlxspec
from conftest import make_hf_checkpoint
from serving import MODEL, Server

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hf_full_dir, hf_tokenizer_dir) -> tuple[Path, Path]:
    draft = make_hf_checkpoint(tmp_path_factory.mktemp("draft"), hf_tokenizer_dir, seed=2, num_hidden_layers=1,
                               sliding_window=None, rope_theta=1e6)
    return hf_full_dir, draft


@pytest.fixture(scope="module")
def server(pair, tmp_path_factory):
    model, draft = pair
    s = Server(model, "--draft", str(draft), "--no-adaptive", "-k", "3", cache=tmp_path_factory.mktemp("cache"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local(pair):
    target, tokenizer = mlxspec.load(str(pair[0]))
    return mlxspec.Session(target, tokenizer)


QUESTIONS = [f"Question {i}: what comes after {i * 7}?" for i in range(8)]


def test_models_and_health(server):
    assert [m.id for m in server.client.models.list().data] == [MODEL]
    assert server.get("/health")["speculative"] is True


def test_chat_and_completion_streamed_and_not_equal_the_library(server, local):
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    expect = local.chat(messages, max_tokens=16, speculative=False)
    whole = server.client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    assert whole.choices[0].message.content == expect
    assert whole.usage.completion_tokens == 16 and whole.choices[0].finish_reason == "length"
    chunks = list(server.client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16,
                                                        temperature=0, stream=True,
                                                        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expect
    assert chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0  # the same prompt again: the prompt cache
    text = local.generate("Once upon a time", max_tokens=12, speculative=False)
    done = server.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=0,
                                            logprobs=2)
    assert done.choices[0].text == text and len(done.choices[0].logprobs.token_logprobs) == 12
    streamed = server.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12,
                                                temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text


def test_content_parts_and_the_speculation_switch(server, local):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}]
    answer = server.client.chat.completions.create(model=MODEL, messages=parts, max_tokens=8, temperature=0,
                                                   extra_body={"num_draft_tokens": 0})
    assert answer.choices[0].message.content == local.chat([{"role": "user", "content": "Hello there"}],
                                                           max_tokens=8, speculative=False)
    assert answer.usage.model_extra.get("speculative", {"drafted": 0})["drafted"] == 0  # switched off


def test_eight_concurrent_clients_each_get_their_text_alone(server, local):
    def ask(question: str):
        return server.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0,
            stop=["\n\n\n"])

    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, QUESTIONS))
    for question, answer in zip(QUESTIONS, answers):
        alone = local.chat([{"role": "user", "content": question}], max_tokens=24, stop=["\n\n\n"],
                           speculative=False)
        assert answer.choices[0].message.content == alone
    assert sum(a.usage.model_extra["speculative"]["drafted"] for a in answers) > 0
    assert server.get("/health")["peak_running"] >= 4  # they were decoded together


def test_a_cancelled_stream_frees_its_row(server):
    stream = server.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Go on"}],
                                                   max_tokens=400, temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.time() + 20
    while server.get("/health")["running"] and time.time() < deadline:
        time.sleep(0.2)
    assert server.get("/health")["running"] == 0


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).encode(), 400, "temperature"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}).encode(), 400, "max_tokens"),
    (json.dumps({"messages": "hi"}).encode(), 400, "messages"),
    (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "not served"),
    (json.dumps({"messages": [{"role": "user", "content": "word " * 3000}]}).encode(), 400, "context"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 0}).encode(), 400, "n must be"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "num_draft_tokens": 9}).encode(), 400, "0..3"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
                ).encode(), 400, "text content parts"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "stop": [""]}).encode(), 400, "stop string"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 99}).encode(),
     400, "logprobs"),
    ("{\"messages\": [{\"role\": \"user\", \"content\": \"\udcff\"}]}".encode("utf-8", "surrogatepass"),
     400, ""),
    (b'{"messages": [{"role": "user", "content": "\\udcff"}]}', 400, ""),
])
def test_bad_requests_get_an_openai_error_and_the_server_keeps_serving(server, body, status, needle):
    code, answer = server.post("/v1/chat/completions", body)
    assert code == status and needle in answer["error"]["message"], answer
    assert answer["error"]["type"] == "invalid_request_error"
    ok = server.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=2, temperature=0)
    assert ok.usage.completion_tokens == 2


def test_a_full_queue_gets_429_and_then_requests_work_again(pair, tmp_path):
    server = Server(pair[0], "--max-batch", "1", "--max-queue", "1", cache=tmp_path)
    try:
        def ask(_):
            try:
                server.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Go"}],
                                                      max_tokens=120, temperature=0)
                return 200
            except openai.RateLimitError:
                return 429

        with cf.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(ask, range(6)))
        assert 429 in codes and 200 in codes, codes
        assert ask(0) == 200
    finally:
        server.stop()


def test_mlxspec_chat_keeps_the_history_and_reuses_the_cache(pair, tmp_path, local):
    """The terminal chat: two turns (the second prefills only its new tokens), /system,
    /reset, /exit; answers equal the library's for the same conversation."""
    env = dict(os.environ, MLXSPEC_CACHE=str(tmp_path))
    script = "Hello there\nAnd then?\n/system Be brief.\n/reset\nHello there\n/exit\nnever read\n"
    done = subprocess.run([sys.executable, "-m", "mlxspec", "chat", "--model", str(pair[0]), "--draft", str(pair[1]),
                           "-n", "8", "-v"], input=script, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    first = local.chat([{"role": "user", "content": "Hello there"}], max_tokens=8, speculative=False)
    second = local.chat([{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": first},
                         {"role": "user", "content": "And then?"}], max_tokens=8, speculative=False)
    assert done.stdout.split("\n")[:2] == [first, second]
    cached = [int(line.split()[2]) for line in done.stderr.splitlines() if line.startswith("prompt cache:")]
    assert len(cached) == 3 and cached[1] > 0
    assert "(system prompt set" in done.stderr and "(conversation cleared)" in done.stderr
