"""Every architecture a Mac owner has: tiny random checkpoints of Qwen2, Qwen3, Llama 3 (RoPE
scaling), GPT-NeoX (Pythia), Gemma 3 (sliding windows) and Phi-3 saved by transformers load
with `mlxspec.load` (the port's blocks where they are the port's, mlx-lm's model classes
otherwise), in both spellings of the config, and give transformers' logits (one pass, a
chunked prefill through the cache, then step by step). As targets and drafts they speculate
exactly (greedy == plain past the window; sampled output has the target's distribution, a
broken verification shown to fail), also where a cache cannot trim (Gemma 3's rotating
caches after they wrap). What needs the port's blocks is one line for the others."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from architectures import ARCHITECTURES, architecture_checkpoint, older_spelling
from full_run import full_only, sample
from mlxspec.engine.sampling import SamplingParams
from mlxspec.errors import InputError, MlxspecError
from mlxspec.load import load_model
from mlxspec.models import ForeignModel
from test_speculative import chi2_critical, sampled_chi2

OUTSIDE_THE_PORT = ["gpt_neox", "gemma3_text", "phi3"]
PROMPT = [1, *range(40, 70)]  # 31 tokens: past Gemma 3's window of 8
# mlx-lm's GPT-NeoX always uses the tanh GELU, where Pythia's config names the exact one
# (transformers follows the config): its logits are mlx-lm's, within this of transformers'
TOLERANCE = {"gpt_neox": 5e-3}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, hf_tokenizer_dir):
    """Each architecture, 32000 tokens (the Mistral tokenizer beside it), in both spellings."""
    out = {}
    for seed, name in enumerate(ARCHITECTURES):
        new = architecture_checkpoint(tmp_path_factory.mktemp(name), name, 32000, seed, hf_tokenizer_dir)
        old = tmp_path_factory.mktemp(f"{name}-older")
        shutil.copytree(new, old, dirs_exist_ok=True)
        older_spelling(old)
        out[name], out[f"{name}-older"] = new, old
    return out


def transformers_logits(folder, ids: list[int]) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("spelling", ["", "-older"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_gives_transformers_logits(checkpoints, name, spelling):
    model, _ = mlxspec.load(checkpoints[name + spelling], dtype=mx.float32)
    if name in OUTSIDE_THE_PORT:
        assert isinstance(model, ForeignModel)
    ref, tolerance = transformers_logits(checkpoints[name], PROMPT), TOLERANCE.get(name, 1e-4)
    assert np.abs(np.array(model(mx.array([PROMPT]))[0]) - ref).max() < tolerance
    cache = model.make_cache(max_rollback=4)
    last, _ = model.prefill(PROMPT[:20], cache, 7, None)  # chunks of 7 through the cache
    assert np.abs(np.array(last[0]) - ref[19]).max() < tolerance
    for i in range(20, len(PROMPT)):  # then step by step
        step, _ = model.forward(mx.array([[PROMPT[i]]]), cache, None)
        assert np.abs(np.array(step[0, -1]) - ref[i]).max() < tolerance, i


@pytest.mark.parametrize("name", OUTSIDE_THE_PORT)
def test_architectures_outside_the_port_equal_mlx_lm_itself(checkpoints, name):
    """mlx-lm reads the older spelling right: there mlxspec's model is mlx-lm's own."""
    from mlx_lm.utils import load_model

    model, _ = mlxspec.load(checkpoints[name], dtype=mx.float32)
    own, _ = load_model(checkpoints[f"{name}-older"])
    own.set_dtype(mx.float32)
    assert mx.allclose(model(mx.array([PROMPT])), own(mx.array([PROMPT])), atol=1e-5).item()


def greedy(session: mlxspec.Session, **options) -> tuple[list[int], int]:
    steps = list(session.stream(PROMPT, max_tokens=40, prompt_cache=False, **options))
    return [s.token for s in steps], steps[-1].stats.drafted if options.get("speculative", True) else 0


@pytest.mark.parametrize("target", sample(ARCHITECTURES, "gemma3_text", "phi3", "qwen3"))
def test_greedy_speculation_equals_plain_for_every_pairing(checkpoints, target):
    model, tok = mlxspec.load(checkpoints[target], dtype=mx.float32)
    plain, _ = greedy(mlxspec.Session(model, tok), speculative=False)
    for draft_name in ["gemma3_text" if target != "gemma3_text" else "gpt_neox", "llama3", "ngram"]:
        draft = draft_name if draft_name == "ngram" else mlxspec.load(checkpoints[draft_name], dtype=mx.float32)[0]
        for k in (1, 3):
            session = mlxspec.Session(model, tok, draft, num_draft_tokens=k, draft_policy="fixed")
            tokens, drafted = greedy(session)
            assert tokens == plain, (target, draft_name, k)
            assert drafted > 0 or draft_name == "ngram"


def test_a_cache_that_cannot_trim_still_rolls_back_exactly(checkpoints):
    """Gemma 3's rotating caches refuse to trim once they wrap: as target and as draft, a
    rollback restores the state before the pass and feeds again what stays."""
    model, tok = mlxspec.load(checkpoints["gemma3_text"], dtype=mx.float32)
    draft, _ = mlxspec.load(checkpoints["gpt_neox"], dtype=mx.float32)
    cache = model.make_cache(max_rollback=3)
    model.prefill(PROMPT, cache, 512, None)
    assert not all(c.is_trimmable() for c in cache)  # wrapped: trimming would be wrong
    plain, _ = greedy(mlxspec.Session(model, tok), speculative=False)
    for pair in [(model, draft), (draft, model)]:
        expect = plain if pair[0] is model else greedy(mlxspec.Session(draft, tok), speculative=False)[0]
        session = mlxspec.Session(pair[0], tok, pair[1], num_draft_tokens=4, draft_policy="fixed")
        assert greedy(session)[0] == expect


@pytest.mark.parametrize("params, broken", [(SamplingParams(1.0), False), (SamplingParams(1.0), True),
                                            full_only(SamplingParams(1.0, top_p=0.9), False)], ids=["T=1", "broken", "top-p"])
def test_sampled_speculation_through_mlx_lm_models_has_the_target_distribution(tmp_path, params, broken, monkeypatch):
    """A Phi-3 target and a confident GPT-NeoX draft, both run by mlx-lm, vocabulary 6: the
    first two tokens against the target's exact distribution; the broken variant resamples
    from p after a rejection (chi-square ~210 at 1000 runs against a critical ~63; the right rule ~15)."""
    from mlxspec.engine import sampler
    from test_batch import resample_from_p

    if broken:
        monkeypatch.setattr(sampler, "verify", resample_from_p)
    target = load_model(architecture_checkpoint(tmp_path / "t", "phi3", 6, 5), dtype=mx.float32)
    draft = load_model(architecture_checkpoint(tmp_path / "d", "gpt_neox", 6, 6, head_scale=4.0), dtype=mx.float32)
    assert isinstance(target, ForeignModel) and isinstance(draft, ForeignModel)
    stat, df = sampled_chi2(target, draft, params, [1, 2, 3, 4, 5, 0, 1, 2, 3], 2, 2, runs=600)
    assert (stat < chi2_critical(df)) != broken, (stat, df)


def test_what_needs_the_ports_blocks_is_one_line(checkpoints):
    model, tok = mlxspec.load(checkpoints["gemma3_text"], dtype=mx.float32)
    with pytest.raises(InputError, match="mlx-lm"):
        mlxspec.Session(model, tok).batch_generate(["a", "b"], max_tokens=2)
    from test_feature_draft import feature_draft
    from test_speculative import tiny

    with pytest.raises(InputError, match="hidden states"):
        mlxspec.Session(model, tok, feature_draft(tiny(3, vocab=32000), 4))


def test_bad_folders_are_one_line(tmp_path, checkpoints):
    unknown = tmp_path / "unknown"
    shutil.copytree(checkpoints["phi3"], unknown)
    (unknown / "config.json").write_text('{"model_type": "no_such_architecture", "vocab_size": 10}')
    half = tmp_path / "half"
    shutil.copytree(checkpoints["phi3"], half)
    (half / "model.safetensors").write_bytes((half / "model.safetensors").read_bytes()[:5000])
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(checkpoints["gpt_neox"], no_tokenizer)
    (no_tokenizer / "tokenizer.json").write_text("{not json")
    target = str(checkpoints["qwen2"])
    for args, needle in [(["-m", str(unknown)], "neither mlxspec's port"), (["-m", str(half)], str(half)),
                         (["-m", target, "--draft", str(no_tokenizer)], "tokenizer.json")]:
        res = mlxspec_cli("generate", *args, "-p", "hi", "--max-tokens", "2")
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], \
            (args, res.stderr)
        with pytest.raises(MlxspecError):  # the same folders converted: one error, nothing written
            mlxspec.convert(args[-1], tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_generate_runs_an_mlx_lm_model_with_prompt_lookup(checkpoints):
    res = subprocess.run([sys.executable, "-m", "mlxspec", "generate", "-m", str(checkpoints["gemma3_text"]),
                          "--draft", "ngram", "-p", "one two three one two three", "--max-tokens", "12",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["generation_tokens"] == 12 and out["draft_mode"] == "prompt lookup"


def mlxspec_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, timeout=300)


def test_convert_writes_an_architecture_outside_the_port_through_mlx_lm(checkpoints, tmp_path):
    source = checkpoints["gpt_neox-older"]
    res = mlxspec_cli("convert", str(source), "-o", str(tmp_path / "f32"), "--dtype", "float32")
    assert res.returncode == 0 and (tmp_path / "f32" / ".mlxspec").is_file(), res.stderr
    original, _ = mlxspec.load(source, dtype=mx.float32)
    converted, tok = mlxspec.load(tmp_path / "f32")
    assert mx.array_equal(converted(mx.array([PROMPT])), original(mx.array([PROMPT]))).item()
    res = mlxspec_cli("convert", str(source), "-o", str(tmp_path / "q4"), "--bits", "4")
    assert res.returncode == 0 and res.stderr.strip().splitlines() == [f"wrote {tmp_path / 'q4'}"], res.stderr
    quantized, _ = mlxspec.load(tmp_path / "q4", dequantize=True, dtype=mx.float32)
    assert isinstance(quantized, ForeignModel) and quantized.args.quantization is None  # expanded
    error = np.abs(np.array(quantized(mx.array([PROMPT]))) - np.array(original(mx.array([PROMPT])))).mean()
    assert 0 < error < 0.5  # quantized (4 bits, a 64-wide random model), and still the model
    again = mlxspec_cli("convert", str(source), "-o", str(tmp_path / "q4"), "--bits", "4")
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1, again.stderr


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from conftest import smollm2_or_skip

    return mlxspec.load(mlxspec.convert(smollm2_or_skip(), tmp_path_factory.mktemp("smol") / "m", dtype="float32"))


@pytest.mark.parametrize("name", sample(ARCHITECTURES, "qwen2", "gemma3_text"))
def test_each_architecture_drafts_with_another_vocabulary_for_the_real_smollm2(checkpoints, smollm2, name):
    from mlxspec.drafts import OtherVocabularyDraft

    target, tokenizer = smollm2
    draft = mlxspec.load_draft(checkpoints[name], target, tokenizer, dtype=mx.float32)  # the Mistral tokenizer
    assert isinstance(draft, OtherVocabularyDraft)
    session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=3, draft_policy="fixed")
    chat = [{"role": "user", "content": "Write a short poem about the sea and the sky."}]
    steps = list(session.stream_chat(chat, max_tokens=20, prompt_cache=False))
    plain = list(session.stream_chat(chat, max_tokens=20, speculative=False, prompt_cache=False))
    assert [s.token for s in steps] == [s.token for s in plain] and steps[-1].stats.drafted > 0


def test_a_layer_layout_mlx_lm_cannot_say_is_one_line(tmp_path):
    """Gemma 3 with two sliding layers and no global one: mlx-lm's class would index a
    global layer that is not there; refused by name instead."""
    from mlxspec.errors import ConfigError

    folder = architecture_checkpoint(tmp_path / "g", "gemma3_text", 64, 0, num_hidden_layers=2)
    with pytest.raises(ConfigError, match="layer_types .* is not every n-th layer global"):
        load_model(folder)
    seven = architecture_checkpoint(tmp_path / "g7", "gemma3_text", 64, 0, num_hidden_layers=7)
    assert isinstance(load_model(seven), ForeignModel)  # every 6th global, the 7th sliding: mlx-lm's layout
