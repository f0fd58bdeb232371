"""The port's architecture families against transformers (fp32): Llama with each RoPE scaling
(llama3, linear, dynamic, yarn; biases too), Qwen2 (q/k/v biases, a sliding window, tied
embeddings) and Qwen3 (per-head q/k norms, an explicit head_dim) give transformers' logits in
one pass, through the cache in chunks and token by token, as saved by transformers, after
`mlxspec convert`, and from llama.cpp's GGUF conversion; a config.json reads the same in
either RoPE spelling; speculative greedy == plain greedy and a batch row == the request
alone on these targets; what the port does not implement is refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec import stream_generate
from mlxspec.errors import ConfigError
from mlxspec.models.config import ModelArgs, port_supports

from conftest import make_hf_checkpoint
from gguf_writer import write_gguf

SEQ, TRAINED = 32, 16  # tokens compared; the dynamic variant's max_position_embeddings
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
VARIANTS = {  # name -> (architecture, config overrides)
    "llama3": ("llama", dict(rope_scaling=LLAMA3, max_position_embeddings=128)),
    "linear": ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 2.0}, attention_bias=True, mlp_bias=True)),
    "dynamic": ("llama", dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}, max_position_embeddings=TRAINED)),
    "yarn": ("llama", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
                           max_position_embeddings=64)),
    "qwen2": ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=0)),
    "qwen2-tied": ("qwen2", dict(tie_word_embeddings=True)),
    "qwen3": ("qwen3", dict(head_dim=32)),
}
TOKENS = np.random.default_rng(0).integers(3, 32000, size=(1, SEQ))


def transformers_logits(folder: Path, step_by_step: bool) -> np.ndarray:
    """transformers' logits for TOKENS: in one pass, or token by token through its cache."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        if not step_by_step:
            return model(torch.tensor(TOKENS)).logits.numpy()
        cache = DynamicCache(config=model.config)
        return np.concatenate([model(torch.tensor(TOKENS[:, i : i + 1]), past_key_values=cache).logits.numpy()
                               for i in range(SEQ)], axis=1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, hf_tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: make_hf_checkpoint(root / name, hf_tokenizer_dir, seed=10 + i, architecture=arch, **overrides)
            for i, (name, (arch, overrides)) in enumerate(VARIANTS.items())}


@pytest.fixture(scope="module")
def references(checkpoints) -> dict[str, np.ndarray]:
    """What each model must give for TOKENS. Dynamic NTK: transformers' token-by-token
    logits, the rule mlxspec follows in every pass (see `mlxspec.models.rope`)."""
    return {name: transformers_logits(folder, step_by_step=name == "dynamic") for name, folder in checkpoints.items()}


@pytest.fixture(scope="module")
def converted(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Every variant through `mlxspec convert --dtype float32`: two by the command line (one
    pair conversion), the rest by the function it calls."""
    out = tmp_path_factory.mktemp("converted")
    cli = subprocess.run([sys.executable, "-m", "mlxspec", "convert", "--target", str(checkpoints["llama3"]),
                          "--draft", str(checkpoints["qwen3"]), "-o", str(out / "pair"), "--dtype", "float32"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    folders = {"llama3": out / "pair" / "target", "qwen3": out / "pair" / "draft"}
    for name in VARIANTS.keys() - folders.keys():
        folders[name] = mlxspec.convert(checkpoints[name], out / name, dtype="float32")
    return folders


def assert_all_passes_match(model, reference: np.ndarray) -> None:
    """One pass, chunked prefill through the cache, and token by token: each within 1e-4."""
    assert np.abs(np.array(model(mx.array(TOKENS))) - reference).max() <= 1e-4
    cache = model.make_cache()
    chunks = [np.array(model(mx.array(TOKENS[:, a:b]), cache)) for a, b in ((0, 11), (11, 24), (24, SEQ))]
    assert np.abs(np.concatenate(chunks, axis=1) - reference).max() <= 1e-4
    cache = model.make_cache()
    steps = [np.array(model(mx.array(TOKENS[:, i : i + 1]), cache)) for i in range(SEQ)]
    assert np.abs(np.concatenate(steps, axis=1) - reference).max() <= 1e-4


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_equal_transformers_as_saved_and_converted(name, checkpoints, references, converted):
    model, _ = mlxspec.load(checkpoints[name])
    assert_all_passes_match(model, references[name])
    again, _ = mlxspec.load(converted[name])
    assert again.args == model.args
    assert_all_passes_match(again, references[name])


def test_dynamic_scaling_is_plain_rope_within_the_trained_context(checkpoints, references):
    """transformers rotates a one-pass prompt longer than max_position_embeddings with the
    prompt's length; mlxspec each position with its own (token by token's rule), so the two
    agree on a pass within the trained context and differ on a longer one."""
    model, _ = mlxspec.load(checkpoints["dynamic"])
    import torch
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(str(checkpoints["dynamic"]), attn_implementation="eager",
                                                  dtype=torch.float32)
    with torch.no_grad():
        short, long = (theirs(torch.tensor(TOKENS[:, :n])).logits.numpy() for n in (TRAINED, SEQ))
    ours = np.array(model(mx.array(TOKENS)))
    assert np.abs(ours[:, :TRAINED] - short).max() <= 1e-4
    assert np.abs(ours[:, TRAINED:] - long[:, TRAINED:]).max() > 1e-2
    assert np.abs(ours - references["dynamic"]).max() <= 1e-4


def spellings(config: dict) -> list[dict]:
    """The config with RoPE settings top-level (rope_theta, rope_scaling: Hub checkpoints
    before transformers 5) and nested (rope_parameters only: transformers 5)."""
    rope = dict(config["rope_parameters"])
    old = {k: v for k, v in config.items() if k != "rope_parameters"}
    old["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        old["rope_scaling"] = rope
    new = {k: v for k, v in config.items() if k != "rope_theta"}
    return [old, new]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_both_config_spellings_read_alike(name, checkpoints):
    from transformers import AutoConfig

    config = json.loads((checkpoints[name] / "config.json").read_text())
    args = ModelArgs.from_hf_config(config)
    for spelling in spellings(config):
        assert ModelArgs.from_hf_config(spelling) == args
        theirs = AutoConfig.for_model(**spelling).rope_parameters
        assert theirs["rope_theta"] == args.rope_theta
        assert theirs["rope_type"] == (args.rope_scaling or {}).get("rope_type", "default")
    assert (args.rope_scaling is None) == (VARIANTS[name][1].get("rope_scaling") is None)


@pytest.mark.parametrize("name", ["llama3", "linear", "yarn", "qwen2-tied", "qwen3"])
def test_gguf_files_convert_to_the_same_logits(name, checkpoints, references, sp_model_file, tmp_path):
    """llama.cpp's files: Llama 3's scaling as a rope_freqs tensor, linear/yarn as metadata,
    interleaved q/k rows and biases (llama), HF's order (Qwen), no output matrix (tied)."""
    out = mlxspec.convert(write_gguf(checkpoints[name], tmp_path / "m.gguf", sp_model_file), tmp_path / "mlx")
    model, _ = mlxspec.load(out)
    assert np.abs(np.array(model(mx.array(TOKENS))) - references[name]).max() <= 1e-4


@pytest.mark.parametrize("target, draft", [("qwen2", "qwen3"), ("dynamic", "llama3")])
def test_greedy_speculative_equals_greedy_plain_and_batch_rows_equal_alone(target, draft, checkpoints):
    """A windowed Qwen2 (biases, rolling cache) and a dynamic-NTK Llama run past its trained
    context (every pass's positions rotated alike, rolled back or not)."""
    model, tokenizer = mlxspec.load(checkpoints[target])
    drafter, _ = mlxspec.load(checkpoints[draft])
    prompts = [[int(t) for t in TOKENS[0, :10]], [int(t) for t in TOKENS[0, 5:9]]]
    plain = [[s.token for s in stream_generate(model, None, p, max_tokens=24)] for p in prompts]
    assert [s.token for s in stream_generate(model, None, prompts[0], max_tokens=24, draft=drafter,
                                             num_draft_tokens=3, draft_policy="fixed")] == plain[0]
    session = mlxspec.Session(model, tokenizer, drafter, num_draft_tokens=2, draft_policy="fixed")
    assert [c.tokens for c in session.batch_generate(prompts, max_tokens=24)] == plain


def test_what_the_port_does_not_implement_is_refused_in_one_line(checkpoints, tmp_path):
    config = json.loads((checkpoints["linear"] / "config.json").read_text())
    broken = shutil.copytree(checkpoints["linear"], tmp_path / "su")
    (broken / "config.json").write_text(json.dumps({**config, "rope_parameters": {"rope_type": "su", "factor": 2.0}}))
    res = subprocess.run([sys.executable, "-m", "mlxspec", "generate", "--model", str(broken), "--prompt", "hi"],
                         capture_output=True, text=True)
    lines = res.stderr.strip().splitlines()  # the port's refusal first, then mlx-lm's
    assert res.returncode != 0 and len(lines) == 1 and "unsupported RoPE scaling 'su'" in lines[0], res.stderr
    for change in ({"model_type": "no_such_arch"}, {"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0] * 8,
                                                                     "long_factor": [2.0] * 8}}):
        assert not port_supports({**config, **change})  # another implementation may run these
    mixed = {**config, "model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 1}
    assert port_supports(mixed)  # mlx-lm would ignore the window: the port's refusal is the answer
    with pytest.raises(ConfigError, match="a sliding window on 1 of 2 layers only is not supported"):
        ModelArgs.from_hf_config(mixed)
    assert port_supports(config) and port_supports({**config, "hidden_size": "64"})  # broken: ours to report
    for name in VARIANTS:
        assert port_supports(json.loads((checkpoints[name] / "config.json").read_text()))
    with pytest.raises(ConfigError, match="weights hold 'model.layers.0.self_attn.q_norm.weight' \\(qk_norm\\)"):
        mlxspec.load(_relabel(checkpoints["qwen3"], tmp_path / "q3", "llama"))
    with pytest.raises(ConfigError, match="has qk_norm \\(q_norm, k_norm\\), the weights hold none"):
        mlxspec.convert(_relabel(checkpoints["qwen2-tied"], tmp_path / "q2", "qwen3"), tmp_path / "o2")


def _relabel(folder: Path, out: Path, model_type: str) -> Path:
    """A copy of `folder` whose config names another architecture."""
    shutil.copytree(folder, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    return out
