"""The project's founding scenario with tiny random checkpoints of the real architectures
and tokenizers: a Mistral target with the Mistral SentencePiece tokenizer, drafted by a
GPT-NeoX (Pythia) model with a byte-level BPE tokenizer, which mlx-lm runs. `convert
--target --draft`, `generate`, `bench` and `serve` all run it, and greedy speculation gives
the target's own text, token for token; the same draft also drafts for the real
SmolLM2-135M target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

import mlxspec
from architectures import architecture_checkpoint
from conftest import smollm2_or_skip
from mlxspec.drafts import OtherVocabularyDraft
from mlxspec.models import ForeignModel

BPE_TOKENIZER = Path(__file__).parents[1] / "mlxspec" / "assets" / "smollm2-draft"
PROMPTS = ["Tell me a story about the sea.", "List three colours, then explain why."]


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pythia(tmp_path_factory) -> Path:
    """A tiny GPT-NeoX with SmolLM2's byte-level BPE tokenizer (49152 tokens)."""
    tokenizer = tmp_path_factory.mktemp("bpe")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BPE_TOKENIZER / name, tokenizer / name)
    return architecture_checkpoint(tmp_path_factory.mktemp("pythia"), "gpt_neox", 49152, 7, tokenizer)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hf_full_dir, pythia) -> Path:
    out = tmp_path_factory.mktemp("pair") / "mistral+pythia"
    res = cli("convert", "--target", str(hf_full_dir), "--draft", str(pythia), "-o", str(out), "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    return out


def greedy_equal(target, tokenizer, draft, prompts: list[str], max_tokens: int) -> int:
    """Asserts greedy speculation == plain for each prompt; returns the tokens drafted."""
    session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=3, draft_policy="fixed")
    drafted = 0
    for prompt in prompts:
        steps = list(session.stream(prompt, max_tokens=max_tokens, prompt_cache=False))
        plain = list(session.stream(prompt, max_tokens=max_tokens, speculative=False, prompt_cache=False))
        assert [s.token for s in steps] == [s.token for s in plain], prompt
        drafted += steps[-1].stats.drafted
    return drafted


def test_the_pair_converts_and_drafts_across_vocabularies_exactly(pair):
    assert json.loads((pair / "pair.json").read_text())["kind"] != "same-vocabulary"
    target, tokenizer, draft = mlxspec.load_pair(pair)
    assert isinstance(draft, OtherVocabularyDraft) and isinstance(draft.model, ForeignModel)
    assert greedy_equal(target, tokenizer, draft, PROMPTS, 24) > 0


def test_generate_and_bench_run_the_pair(pair, tmp_path):
    res = cli("generate", "--pair", str(pair), "-p", PROMPTS[0], "--max-tokens", "16", "--no-adaptive", "-k", "3", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["drafted"] > 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    res = cli("bench", "--pair", str(pair), "--prompts", str(prompts), "-n", "6", "--temperatures", "0", "-k", "2",
              "--repeats", "1", "--no-adaptive", "--no-plots", "-o", str(tmp_path / "report"))
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    assert {row["k"] for row in rows} >= {0, 2}


def test_serve_runs_the_pair_and_answers_as_alone(pair, tmp_path):
    pytest.importorskip("uvicorn")
    from serving import Server

    target, tokenizer, _ = mlxspec.load_pair(pair)
    alone = mlxspec.Session(target, tokenizer)
    server = Server(pair / "target", "--draft", str(pair / "draft"), "--no-adaptive", "-k", "3", cache=tmp_path)
    try:
        for prompt in PROMPTS:
            answer = server.client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
            assert answer.choices[0].text == alone.generate(prompt, max_tokens=12, speculative=False)
    finally:
        server.stop()


def test_the_pythia_draft_drafts_for_the_real_smollm2(pythia, tmp_path):
    """Another vocabulary (BPE against BPE, a different model) for a real pretrained target."""
    target_dir = mlxspec.convert(smollm2_or_skip(), tmp_path / "smollm2", dtype="float32")
    target, tokenizer = mlxspec.load(target_dir)
    draft = mlxspec.load_draft(pythia, target, tokenizer, dtype=mx.float32)
    greedy_equal(target, tokenizer, draft, ["What is the capital of France?"], 16)
