"""An adapter where a target comes from: a Mistral-layout checkpoint (consolidated.safetensors,
Mistral's names) takes an adapter trained on its HF twin; `load_pair(adapter=)` and
`--pair --adapter` adapt the target only; `chat` answers with the adapted target."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlx.core as mx
import pytest

import mlxspec
from mlxspec.convert.pair import convert_pair
from mlxspec.load import load_model
from mlxspec.models import ModelArgs
from adapter_training import mlx_lm_with_adapter, train_adapter
from conftest import make_hf_checkpoint
from full_run import full_only
from synthetic import write_mistral_checkpoint_from_hf, write_random_hf_checkpoint

FOLDED = 5e-4  # logits of weights with an adapter folded in vs mlx-lm's unfused layers: float rounding
TOKENS = mx.array([[1, 5, 9, 200, 31, 7, 123, 77, 2000, 15]])


def gap(a: mx.array, b: mx.array) -> float:
    return float(mx.abs(a - b).max())


@pytest.fixture(scope="module")
def base(tmp_path_factory, hf_tokenizer_dir):
    return make_hf_checkpoint(tmp_path_factory.mktemp("adapter-base"), hf_tokenizer_dir, seed=7, architecture="llama")


@pytest.fixture(scope="module")
def lora(tmp_path_factory, base):
    return train_adapter(base, tmp_path_factory.mktemp("lora") / "lora", "lora", num_layers=-1)


@pytest.mark.parametrize("kind", [full_only("dora"), "full"])
def test_a_mistral_layout_checkpoint_takes_the_adapter_of_its_hf_twin(tmp_path, sp_model_file, kind):
    """Loaded, its q/k rows stay in RoPE's interleaved order: the adapter's follow them.
    Converted, they are put in HF's order: the adapter folds in as it is."""
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=32000, sliding_window=16, model_type="mistral")
    hf = write_random_hf_checkpoint(tmp_path / "hf", args, seed=4, tokenizer_file=sp_model_file)
    consolidated = write_mistral_checkpoint_from_hf(hf, tmp_path / "mistral", args)
    adapter = train_adapter(hf, tmp_path / "adapter", kind, num_layers=1, iters=3)
    theirs = mlx_lm_with_adapter(hf, adapter)(TOKENS)
    assert gap(mlxspec.load(consolidated, adapter=adapter)[0](TOKENS), theirs) < FOLDED
    assert gap(load_model(consolidated)(TOKENS), theirs) > 0.05
    assert gap(load_model(mlxspec.convert(consolidated, tmp_path / "fused", adapter=adapter))(TOKENS), theirs) < FOLDED


def test_a_pair_adapts_its_target_only(base, lora, tmp_path, hf_tokenizer_dir):
    small = make_hf_checkpoint(tmp_path / "small", hf_tokenizer_dir, seed=8, architecture="llama", num_hidden_layers=1)
    convert_pair(base, small, tmp_path / "pair")
    target, _, draft = mlxspec.load_pair(tmp_path / "pair", adapter=lora)
    assert gap(target(TOKENS), mlxspec.load(base, adapter=lora)[0](TOKENS)) < 1e-5
    assert getattr(draft, "adapter_id", None) is None and gap(draft(TOKENS), load_model(small)(TOKENS)) == 0
    texts = [cli("generate", *where, "--adapter", str(lora), "-p", "Hello there", "-n", "12", "--temp", "0", "-k", "2",
                 "--no-adaptive").stdout for where in (["--pair", str(tmp_path / "pair")], ["--model", str(base)])]
    assert texts[0] == texts[1] and texts[0].strip()


def test_chat_answers_with_the_adapted_target(base, lora, tmp_path):
    fused = mlxspec.convert(base, tmp_path / "fused", adapter=lora)
    answers = [cli("chat", "--model", str(model), *extra, "--draft", "ngram", "--temp", "0", "-n", "10",
                   stdin="Hello there\n").stdout for model, extra in ((base, ["--adapter", str(lora)]), (fused, []))]
    plain = cli("chat", "--model", str(base), "--temp", "0", "-n", "10", stdin="Hello there\n").stdout
    assert answers[0] == answers[1] != plain


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, input=stdin,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr
    return res


def test_bench_measures_the_adapted_target(base, lora, tmp_path):
    out = tmp_path / "report"
    cli("bench", "--model", str(base), "--adapter", str(lora), "--draft", "ngram", "-k", "2", "--repeats", "1",
        "--temperatures", "0", "--max-tokens", "6", "--no-adaptive", "--no-plots", "--kinds", "code", "-o", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["weights"].endswith(f"target with the adapter {lora}") and report["rows"]


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_a_key_naming_the_embedding_adapts_a_tied_embedding_and_its_head(tmp_path, kind):
    """A Qwen2 (biased q/k/v, tied head): mlx-lm adapts `model.embed_tokens` as a full module name."""
    base = make_hf_checkpoint(tmp_path / "qwen2", None, seed=3, architecture="qwen2", tie_word_embeddings=True)
    adapter = train_adapter(base, tmp_path / kind, kind, keys=["self_attn.q_proj", "model.embed_tokens"], iters=3)
    assert "model.embed_tokens.lora_a" in mlxspec.adapters.read_adapter(adapter).shapes
    model = load_model(base)
    mlxspec.adapters.apply_adapter(model, adapter)
    theirs = mlx_lm_with_adapter(base, adapter)(TOKENS)
    assert gap(model(TOKENS), theirs) < FOLDED and gap(load_model(base)(TOKENS), theirs) > 0.05


def test_serve_answers_with_the_adapted_target(base, lora, tmp_path):
    pytest.importorskip("openai")
    from serving import MODEL, Server

    fused = mlxspec.convert(base, tmp_path / "fused", adapter=lora)
    texts = []
    for model, extra in ((base, ["--adapter", str(lora), "--draft", "ngram"]), (fused, [])):
        server = Server(model, *extra, "--no-adaptive", "-k", "2", cache=tmp_path)
        try:
            done = server.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0)
            texts.append(done.choices[0].text)
        finally:
            server.stop()
    assert texts[0] == texts[1] and texts[0]
