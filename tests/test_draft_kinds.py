"""A kind of draft is one object: a kind defined here, in the test alone (no edit to the
package), registered by name, runs through `mlxspec generate --draft NAME`, `mlxspec bench`
(calibration included), a batch and the server, and its greedy output equals plain
decoding's everywhere. The kinds shipped answer the same protocol."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

import mlxspec
from mlxspec import Session, cli
from mlxspec.arguments import run
from mlxspec.drafts import KINDS, DraftKind, FeatureDraft, LookupAndModel, NGramDraft, as_draft, register
from mlxspec.drafts.protocol import MODEL_OUTLOOK, point_mass
from mlxspec.errors import InputTypeError
from serving import free_port

NAME = "bigram-test"


class BigramDrafter:
    """After token t, proposes what last followed t in the text so far, and so on."""

    mode, feature_layers, varies = "bigram (test)", None, False

    def __init__(self) -> None:
        self.text: list[int] = []
        self.follows: dict[int, int] = {}
        self.last = -1

    def outlook(self, last):
        return MODEL_OUTLOOK

    def extend(self, tokens, features=None):
        for token in tokens:
            if self.text:
                self.follows[self.text[-1]] = token
            self.text.append(token)

    def propose(self, last, k, pick):
        self.last, chain = last, []
        for _ in range(k):
            chain.append(self.follows.get(chain[-1] if chain else last, last))
        return point_mass(chain)

    def settle(self, accepted, drafted, features=None):
        self.extend([self.last, *drafted[:accepted]])


class BatchBigram:
    mode, feature_layers = BigramDrafter.mode, None

    def __init__(self) -> None:
        self.rows: list[BigramDrafter] = []

    def add(self, prompt, hidden=None, greedy=True):
        self.rows.append(BigramDrafter())
        self.rows[-1].extend(prompt)

    def keep(self, rows):
        self.rows = [self.rows[r] for r in rows]

    def outlook(self, b, last):
        return MODEL_OUTLOOK

    def extend(self, b, tokens, hidden=None):
        self.rows[b].extend(tokens)

    def propose(self, lasts, ks, picks):
        return [row.propose(last, k, pick) for row, last, k, pick in zip(self.rows, lasts, ks, picks)]

    def settle(self, accepted, drafted, hidden=None):
        for row, n, tokens in zip(self.rows, accepted, drafted):
            row.settle(n, tokens)


class BigramDraft:
    batches, reads_features, token_model = True, False, None
    timed = property(lambda self: self)

    def drafter(self, target, k_max, chunk, greedy):
        return BigramDrafter()

    def batch_drafter(self, target, chunk):
        return BatchBigram()

    def check(self, target, num_draft_tokens):
        pass

    def describe(self):
        return "bigram lookup (a kind the test defines)"

    def vocabulary(self, target):
        return target.args.vocab_size

    def fingerprint(self):
        return {"draft": NAME}


@pytest.fixture
def bigram(monkeypatch, tmp_path):
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path / "cache"))
    register(NAME, lambda settings: BigramDraft(), help="test kind")
    yield NAME
    del KINDS.entries[NAME]


PROMPT = "one two three one two three one two"


def cli_json(argv: list[str], capsys) -> dict:
    assert run(cli.app, argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_a_kind_defined_outside_the_package_runs_through_generate(bigram, hf_full_dir, capsys):
    base = ["generate", "-m", str(hf_full_dir), "-p", PROMPT, "-n", "24", "--json"]
    plain = cli_json(base, capsys)
    fixed = cli_json([*base, "--draft", bigram, "-k", "3", "--no-adaptive"], capsys)
    adaptive = cli_json([*base, "--draft", bigram, "-k", "3"], capsys)  # calibrates the new kind
    assert fixed["text"] == adaptive["text"] == plain["text"]
    assert fixed["draft_mode"] == "bigram (test)" and fixed["drafted"] > 0


def test_a_kind_defined_outside_the_package_runs_through_bench(bigram, hf_full_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT + "\n")
    out = tmp_path / "report"
    assert run(cli.app, ["bench", "-m", str(hf_full_dir), "--draft", bigram, "-k", "2", "--temperatures", "0",
                         "--repeats", "1", "-n", "8", "--no-plots", "--prompts", str(prompts), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["drafts"]["mlxspec"] == "bigram lookup (a kind the test defines)"
    assert any(row.get("k") == 2 for row in report["rows"])


def test_a_kind_defined_outside_the_package_runs_in_a_batch(bigram, hf_full_dir):
    target, tokenizer = mlxspec.load(str(hf_full_dir))
    prompts = [PROMPT, "four five four five four", "six seven eight six seven"]
    session = Session(target, tokenizer, bigram, num_draft_tokens=3, draft_policy="fixed")
    batched = session.batch_generate(prompts, max_tokens=16)
    plain = Session(target, tokenizer)
    assert [c.tokens for c in batched] == [plain.batch_generate([p], max_tokens=16)[0].tokens for p in prompts]
    assert sum(c.stats.drafted for c in batched) > 0


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def test_a_kind_defined_outside_the_package_runs_in_the_server(bigram, hf_full_dir):
    import uvicorn

    from mlxspec.serve import Engine
    from mlxspec.serve.app import create_app

    target, tokenizer = mlxspec.load(str(hf_full_dir))
    engine = Engine(Session(target, tokenizer, bigram, num_draft_tokens=3, draft_policy="fixed"))
    assert engine.drafting
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine, "tiny"), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 60
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        answer = post(f"http://127.0.0.1:{port}/v1/completions", {"prompt": PROMPT, "max_tokens": 16, "temperature": 0})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    plain = Session(target, tokenizer).generate(PROMPT, max_tokens=16)
    assert answer["choices"][0]["text"] == plain
    assert answer["usage"]["speculative"]["drafted"] > 0


def test_every_shipped_kind_answers_the_protocol(hf_full_dir):
    target, _ = mlxspec.load(str(hf_full_dir))
    feature = FeatureDraft(mlxspec.ModelArgs(hidden_size=target.args.hidden_size, num_hidden_layers=1,
                                             intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                                             vocab_size=target.args.vocab_size))
    for draft in (as_draft(target), feature, NGramDraft(), LookupAndModel(target), as_draft("ngram")):
        assert isinstance(draft, DraftKind), draft
        assert draft.describe() and draft.vocabulary(target) == target.args.vocab_size
        assert draft.drafter(target, 4, 16, True).mode
        assert draft.batches == (not isinstance(draft, (LookupAndModel, NGramDraft)))
    with pytest.raises(InputTypeError, match="name of a kind of draft"):
        as_draft("no-such-kind")
