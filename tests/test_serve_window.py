"""The server on a target with a sliding window (8) shorter than its prompts, the prompt
cache on and speculation on: 16 concurrent streaming clients with distinct prompts, half
greedy, half sampled, then a second round in which every client extends its text (token-id
prompts, so that the greedy ones extend exactly what the first round cached: the prompt
cache hands back the rolling caches their batch rows left). Every greedy reply equals the
same prompt decoded alone, from a fresh prefill."""

from __future__ import annotations

import concurrent.futures as cf
import random

import pytest

import mlxspec
from conftest import make_hf_checkpoint
from serving import MODEL, Server

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

CLIENTS = 16
TOKENS = 20


@pytest.fixture(scope="module")
def windowed(tmp_path_factory, hf_tokenizer_dir):
    model = make_hf_checkpoint(tmp_path_factory.mktemp("window-8"), hf_tokenizer_dir, seed=4, sliding_window=8)
    draft = make_hf_checkpoint(tmp_path_factory.mktemp("window-draft"), hf_tokenizer_dir, seed=3,
                               num_hidden_layers=1, sliding_window=8)
    server = Server(model, "--draft", str(draft), "--no-adaptive", "-k", "3", "--prompt-cache", str(CLIENTS),
                    cache=tmp_path_factory.mktemp("cache"))
    target, tokenizer = mlxspec.load(str(model))
    yield server, mlxspec.Session(target, tokenizer, prompt_cache_entries=0)
    server.stop()


def stream_reply(server: Server, prompt: list[int], greedy: bool, seed: int) -> tuple[str, int, int]:
    """The streamed completion's text, the tokens its speculation drafted and the prompt
    tokens the prompt cache held."""
    chunks = server.client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=TOKENS, stream=True, stream_options={"include_usage": True},
        temperature=0 if greedy else 1.0, seed=seed)
    text, drafted, cached = "", 0, 0
    for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].text or ""
        if chunk.usage is not None:
            drafted = (chunk.usage.model_extra or {}).get("speculative", {}).get("drafted", 0)
            cached = chunk.usage.prompt_tokens_details.cached_tokens
    return text, drafted, cached


def test_sixteen_streaming_clients_on_a_windowed_target_get_their_greedy_text_alone(windowed):
    server, alone = windowed
    rng = random.Random(16)
    vocab = alone.target.args.vocab_size
    prompts = [[1] + [rng.randrange(3, vocab) for _ in range(rng.randint(12, 30))] for _ in range(CLIENTS)]
    drafted = cached = 0
    for turn in range(2):
        def ask(i: int) -> tuple[str, int, int]:
            return stream_reply(server, prompts[i], greedy=i % 2 == 0, seed=100 * turn + i)

        with cf.ThreadPoolExecutor(CLIENTS) as pool:
            replies = list(pool.map(ask, range(CLIENTS)))
        for i, (text, count, held) in enumerate(replies):
            drafted, cached = drafted + count, cached + held * turn
            more = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 6))]
            if i % 2 == 0:
                steps = list(alone.stream(prompts[i], max_tokens=TOKENS, speculative=False))
                assert text == "".join(s.text for s in steps), (turn, i)
                prompts[i] = prompts[i] + [s.token for s in steps] + more
            else:
                prompts[i] = prompts[i] + more
    assert drafted > 0  # speculation ran inside the batch
    assert cached > 12 * CLIENTS // 2  # the greedy second turns began from the first turns' caches
    assert server.get("/health")["peak_running"] >= 4
