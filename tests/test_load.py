"""Loading the layouts users have: HF, Mistral's consolidated, mlx-lm's (plain and
quantized); and clear errors for broken folders."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.models.config import ModelArgs, load_model_args
from synthetic import write_mistral_checkpoint_from_hf
from mlxspec.errors import CheckpointError, ConfigError
from mlxspec.load import load_model

PROMPT = "The capital of France is"


def test_mistral_layout_equals_hf_layout(hf_window_dir, tmp_path):
    args = load_model_args(hf_window_dir)
    mistral_dir = write_mistral_checkpoint_from_hf(hf_window_dir, tmp_path / "mistral", args)
    assert not (mistral_dir / "config.json").exists()
    hf_model, hf_tok = mlxspec.load(hf_window_dir)
    mi_model, mi_tok = mlxspec.load(mistral_dir)
    assert mi_model.args.rope_traditional and not hf_model.args.rope_traditional
    toks = mx.array(np.random.default_rng(0).integers(0, 32000, size=(1, 70)))
    assert mx.abs(hf_model(toks) - mi_model(toks)).max().item() < 1e-4
    assert hf_tok.encode(PROMPT) == mi_tok.encode(PROMPT)


def greedy_mlx_lm(path, prompt_ids, n):
    import mlx_lm
    from mlx_lm.generate import generate_step

    model, _ = mlx_lm.load(str(path))
    out = []
    for (tok, _), _ in zip(generate_step(mx.array(prompt_ids), model, max_tokens=n), range(n)):
        out.append(int(tok))
    return out


def greedy_mlxspec(path, prompt_ids, n):
    model, tok = mlxspec.load(path)
    return [s.token for s in mlxspec.stream_generate(model, tok, prompt_ids, max_tokens=n)]


@pytest.mark.parametrize("quantize", [False, True])
def test_mlx_lm_converted_checkpoint_generates_like_mlx_lm(hf_full_dir, tmp_path, quantize):
    """mlx_lm.convert output (an mlx-community style folder) loads and decodes identically.
    (No sliding window here: mlx-lm ignores it, so only full attention can agree.)"""
    from mlx_lm import convert

    out = tmp_path / "mlx"
    convert(str(hf_full_dir), mlx_path=str(out), quantize=quantize, q_bits=4, q_group_size=32, dtype="float32")
    config = json.loads((out / "config.json").read_text())
    assert ("quantization" in config) == quantize
    prompt_ids = mlxspec.load(out)[1].encode(PROMPT)
    ours = greedy_mlxspec(out, prompt_ids, 24)
    assert ours == greedy_mlx_lm(out, prompt_ids, 24)
    assert len(set(ours)) > 3  # a real sequence, not one repeated token


def test_bad_folders(hf_window_dir, tmp_path):
    with pytest.raises(ConfigError, match="no config.json or params.json"):
        load_model(tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        mlxspec.load(tmp_path / "nope")

    broken = tmp_path / "broken"
    shutil.copytree(hf_window_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "no_such_arch"}))
    with pytest.raises(ConfigError, match="unsupported architecture 'no_such_arch': neither"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))  # mlx-lm's, not these weights
    with pytest.raises(CheckpointError, match="mlx-lm cannot load this gpt_neox checkpoint"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({**config, "hidden_size": 96}))
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="the config says 3 layers, the weights hold 2"):
        load_model(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps(config))
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(broken)


def test_config_validation():
    base = dict(hidden_size=64, num_hidden_layers=1, intermediate_size=8, num_attention_heads=4, vocab_size=10)
    with pytest.raises(ConfigError, match="multiple"):
        ModelArgs(**base, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="sliding_window"):
        ModelArgs(**base, sliding_window=0)
    with pytest.raises(ConfigError, match="lacks required key 'vocab_size'"):
        ModelArgs.from_hf_config({"model_type": "mistral", **{k: v for k, v in base.items() if k != "vocab_size"}})
    with pytest.raises(ConfigError, match="rope_scaling factor must be a finite number > 0 for llama3 RoPE"):
        ModelArgs.from_hf_config({"model_type": "llama", **base, "rope_scaling": {"rope_type": "llama3"}})
    nested = ModelArgs.from_hf_config({"model_type": "mistral", **base, "rope_parameters": {"rope_theta": 1e6}})
    assert nested.rope_theta == 1e6  # transformers >= 5 layout
    moe = {"dim": 64, "n_layers": 2, "hidden_dim": 128, "n_heads": 4, "vocab_size": 100}
    with pytest.raises(ConfigError, match="num_local_experts must be"):
        ModelArgs.from_mistral_params({**moe, "moe": {}})
    with pytest.raises(ConfigError, match="moe must be an object"):
        ModelArgs.from_mistral_params({**moe, "moe": 8})
    assert ModelArgs.from_mistral_params({**moe, "moe": {"num_experts": 8}}).num_experts_per_tok == 2
