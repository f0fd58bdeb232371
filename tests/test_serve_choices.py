"""`n` choices through the real `openai` client against `mlxspec serve` (a draft speculating
in the batch): chat and text completions return n choices indexed 0..n-1, streamed (chunks
interleaved, each choice its own finish) and not, with usage counting the prompt once and
every choice's tokens; seeded requests reproduce, choice 0 is the n=1 answer and sampled
choices differ; the prompt is prefilled once for all n; a bad n is a 400 naming `n`; a
client that leaves cancels every row."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from collections import defaultdict

import pytest

from serving import MODEL, Server

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

ASK = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_full_dir, hf_tokenizer_dir):
    from conftest import make_hf_checkpoint

    draft = make_hf_checkpoint(tmp_path_factory.mktemp("draft"), hf_tokenizer_dir, seed=2, num_hidden_layers=1,
                               sliding_window=None, rope_theta=1e6)
    s = Server(hf_full_dir, "--draft", str(draft), "--no-adaptive", "-k", "3", "--max-batch", "8",
               cache=tmp_path_factory.mktemp("cache"))
    yield s
    s.stop()


def chat(server: Server, **options):
    return server.client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, **options)


def streamed(server: Server, **options) -> tuple[dict[int, str], dict[int, list], object]:
    """Each choice's text and finish reasons from a streamed chat, and the usage chunk."""
    texts, finishes, usage = defaultdict(str), defaultdict(list), None
    for chunk in chat(server, stream=True, stream_options={"include_usage": True}, **options):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index].append(choice.finish_reason)
    return dict(texts), dict(finishes), usage


def test_n_choices_whole_and_streamed_with_usage_over_all_of_them(server):
    one = chat(server, temperature=1.0, seed=4)
    whole = chat(server, n=3, temperature=1.0, seed=4)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert whole.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert whole.usage.completion_tokens == 3 * 12 and whole.usage.total_tokens == whole.usage.prompt_tokens + 36
    assert whole.usage.model_extra["speculative"]["drafted"] > 0
    texts, finishes, usage = streamed(server, n=3, temperature=1.0, seed=4)
    assert texts == {c.index: c.message.content for c in whole.choices}  # the same seeded choices
    assert finishes == {0: ["length"], 1: ["length"], 2: ["length"]}  # each choice its own finish chunk
    assert usage.completion_tokens == 36 and usage.prompt_tokens == one.usage.prompt_tokens
    greedy = chat(server, n=3, temperature=0)
    assert len({c.message.content for c in greedy.choices}) == 1
    assert greedy.choices[0].message.content == chat(server, temperature=0).choices[0].message.content


def test_text_completions_take_n_streamed_and_not(server):
    whole = server.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, n=2,
                                             temperature=1.0, seed=9, logprobs=1)
    assert [c.index for c in whole.choices] == [0, 1] and whole.usage.completion_tokens == 16
    assert [len(c.logprobs.token_logprobs) for c in whole.choices] == [8, 8]  # each choice its own
    texts = defaultdict(str)
    for chunk in server.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, n=2,
                                                  temperature=1.0, seed=9, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert dict(texts) == {c.index: c.text for c in whole.choices}


def test_seeded_choices_reproduce_choice_0_is_the_n1_answer_and_they_differ(server):
    for seed in (1, 2, 3):
        first = [c.message.content for c in chat(server, n=3, temperature=1.0, seed=seed).choices]
        assert [c.message.content for c in chat(server, n=3, temperature=1.0, seed=seed).choices] == first
        assert first[0] == chat(server, temperature=1.0, seed=seed).choices[0].message.content
        assert len(set(first)) > 1, (seed, first)


def test_requests_whose_choices_do_not_fit_wait_their_turn(server):
    """Three requests of 3 choices at once: 9 rows for a batch of 8, so one waits whole (its
    choices join together); each gets the choices it gets alone."""
    def ask(seed: int) -> list[str]:
        return [c.message.content for c in chat(server, n=3, temperature=1.0, seed=seed).choices]

    with cf.ThreadPoolExecutor(3) as pool:
        together = list(pool.map(ask, (21, 22, 23)))
    assert together == [ask(seed) for seed in (21, 22, 23)]
    assert server.get("/health")["peak_running"] <= 8


def test_the_prompt_is_prefilled_once_for_all_choices(server):
    ask = [{"role": "user", "content": "A question nobody asked before: why are lemons yellow?"}]
    before = server.get("/health")["prefilled_tokens"]
    answer = server.client.chat.completions.create(model=MODEL, messages=ask, max_tokens=4, n=4, temperature=1.0)
    prefilled = server.get("/health")["prefilled_tokens"] - before
    cached = answer.usage.prompt_tokens_details.cached_tokens
    assert prefilled == answer.usage.prompt_tokens - cached > 0  # once, not four times


@pytest.mark.parametrize("n", [0, 17, "3", 2.5, True, 9])
def test_a_bad_n_is_a_400_naming_n_and_the_server_keeps_serving(server, n):
    code, answer = server.post("/v1/chat/completions", json.dumps({"messages": ASK, "n": n}).encode())
    assert code == 400 and answer["error"]["param"] == "n", answer
    assert ("--max-batch" if n == 9 else "1..16") in answer["error"]["message"]
    assert chat(server, n=2, temperature=0).usage.completion_tokens == 24


def test_a_client_that_leaves_cancels_every_choice(server):
    cancelled = server.get("/health")["cancelled"]
    stream = server.client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=400, n=3, temperature=1.0,
                                                   stream=True)
    for i, _ in enumerate(stream):
        if i == 8:
            break
    stream.close()
    deadline = time.time() + 30
    while (server.get("/health")["running"] or server.get("/health")["cancelled"] < cancelled + 3) \
            and time.time() < deadline:
        time.sleep(0.2)
    health = server.get("/health")
    assert health["running"] == 0 and health["cancelled"] == cancelled + 3

