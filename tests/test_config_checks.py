"""Configuration values (`models.config`): every field of the wrong type or out of range is
refused by name before anything is built or written, and each architecture honours exactly
what transformers honours: what it applies and we do not is refused, what it ignores we
ignore too (checked against transformers' own logits)."""

from __future__ import annotations

import json
import math
import shutil

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.errors import ConfigError
from mlxspec.models import ModelArgs

BASE = {"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 512}


@pytest.mark.parametrize("change, message", [
    ({"rms_norm_eps": "1e-5"}, "rms_norm_eps must be a finite number in \\(0, 1\\), got '1e-5'"),
    ({"rms_norm_eps": math.nan}, "rms_norm_eps must be a finite number"),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be a finite number"),
    ({"rms_norm_eps": 1e300}, "rms_norm_eps must be a finite number in \\(0, 1\\)"),
    ({"rope_theta": "10000"}, "rope_theta must be a finite number"),
    ({"rope_theta": math.inf}, "rope_theta must be a finite number"),
    ({"rope_theta": 1e300}, "rope_theta must be a finite number in \\(0, 1e\\+30\\)"),
    ({"rope_theta": True}, "rope_theta must be a finite number"),
    ({"vocab_size": 10**12}, "vocab_size must be a positive integer up to 2\\*\\*31-1"),
    ({"sliding_window": 2**63 - 1}, "sliding_window must be a positive integer \\(or absent\\) up to 1073741824"),
    ({"sliding_window": "4096"}, "sliding_window must be a positive integer"),
    ({"sliding_window": 0}, "sliding_window must be a positive integer"),
    ({"sliding_window": 16.0}, "sliding_window must be a positive integer"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer up to 2..31-1 .MLX shapes are 32-bit., got 0"),
    ({"num_attention_heads": "4"}, "num_attention_heads must be a positive integer"),
    ({"hidden_size": 64.0}, "hidden_size must be a positive integer"),
    ({"hidden_size": True}, "hidden_size must be a positive integer"),
    ({"vocab_size": -5}, "vocab_size must be a positive integer"),
    ({"num_hidden_layers": None}, "num_hidden_layers must be a positive integer"),
    ({"head_dim": 0}, "head_dim must be a positive integer"),
    ({"num_key_value_heads": 3}, "is not a multiple of num_key_value_heads"),
    ({"max_position_embeddings": "512"}, "max_position_embeddings must be a positive integer"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false"),
    ({"rope_traditional": 1}, "rope_traditional must be true or false"),
    ({"rope_scaling": "linear"}, "rope_scaling must be an object"),
    ({"rope_scaling": {"type": "su", "factor": 2.0}}, "unsupported RoPE scaling 'su'"),
    ({"rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                          "original_max_position_embeddings": 64}}, "different short and long factors"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling low_freq_factor must be a finite number"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": -2.0}}, "rope_scaling factor must be a finite number > 0"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "partial_rotary_factor": 0.5},
     "partial_rotary_factor 0.5"),
    ({"rope_scaling": {"rope_type": None, "type": "linear", "factor": 4}}, "unsupported RoPE scaling"),
    ({"quantization_config": "gptq"}, "quantization_config must be an object"),
    ({"quantization": {"bits": 4, "group_size": 64, "model.layers.0.mlp.up_proj": 3}},
     "quantization\\['model.layers.0.mlp.up_proj'\\] must be an object"),
    ({"num_attention_heads": 4, "head_dim": 2**30}, "num_attention_heads x head_dim = 4294967296 is more than"),
    ({"quantization": {"bits": 7, "group_size": 64}}, "bits must be one of"),
    ({"quantization": {"bits": 4, "group_size": "64"}}, "group_size must be one of"),
    ({"quantization": [4, 64]}, "quantization must be an object"),
    ({"quantization": {"bits": 4, "group_size": 64, "model.layers.0.mlp.up_proj": {"bits": 9}}},
     "quantization\\['model.layers.0.mlp.up_proj'\\]: bits must be one of"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "weights quantized with 'gptq' are not supported"),
    ({"model_type": "llama", "attention_bias": "yes"}, "attention_bias must be true or false"),
    ({"model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 1}, "a sliding window on 1 of 2 layers"),
    ({"model_type": "qwen2", "layer_types": ["full_attention"]}, "layer_types must name"),
    ({"model_type": "no_such_arch"}, "unsupported architecture 'no_such_arch'"),
    ({"model_type": None}, "config.json has no model_type"),
])
def test_config_values_of_the_wrong_type_or_range(change, message, tmp_path):
    config = {k: v for k, v in {**BASE, **change}.items() if not (k == "model_type" and v is None)}
    with pytest.raises(ConfigError, match=message):
        ModelArgs.from_hf_config(config)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=str(folder / "config.json")):
        mlxspec.load(folder)  # the file is named; nothing else is read


@pytest.mark.parametrize("change", [{"hidden_act": "silu"}, {"hidden_act": "swish"}, {"attention_bias": True},
                                    {"mlp_bias": True}, {"rope_scaling": {"rope_type": "default"}},
                                    {"quantization_config": {"quant_method": "mlx", "bits": 4, "group_size": 64}}])
def test_settings_transformers_ignores_or_that_mean_the_same_load(change):
    ModelArgs.from_hf_config({**BASE, **change})  # a Mistral has no biases in transformers, whatever the flag


@pytest.mark.parametrize("key", ["vision_encoder", "lora", "quantization", "yarn"])
def test_mistral_params_we_do_not_implement_are_named(key):
    params = {"dim": 64, "n_layers": 2, "hidden_dim": 128, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 32000,
              "norm_eps": 1e-5, key: {"something": 1}}
    with pytest.raises(ConfigError, match=f"'{key}'"):
        ModelArgs.from_mistral_params(params)


def test_config_that_is_not_utf8_or_too_deep(tmp_path):
    (tmp_path / "config.json").write_bytes(b'{"model_type": "mistral\xff"}')
    with pytest.raises(ConfigError, match="is not UTF-8 text \\(byte 0xff at offset 23\\)"):
        mlxspec.load(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply|does not hold a JSON object"):
        mlxspec.load(tmp_path)


def test_a_llama_ignores_sliding_window_as_transformers_does(tmp_path, hf_tokenizer_dir):
    """transformers' Llama never windows its attention, whatever config.json says."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import TINY, reinit_

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY, attn_implementation="eager")).eval()
    reinit_(model, 0)
    model.save_pretrained(str(tmp_path / "llama"), safe_serialization=True)
    config = json.loads((tmp_path / "llama" / "config.json").read_text())
    config.update(sliding_window=4, rope_theta=model.config.rope_parameters["rope_theta"])
    (tmp_path / "llama" / "config.json").write_text(json.dumps(config))
    for f in hf_tokenizer_dir.iterdir():
        shutil.copy(f, tmp_path / "llama" / f.name)
    ids = np.random.default_rng(0).integers(3, 32000, size=(1, 24))
    ours, _ = mlxspec.load(tmp_path / "llama")
    assert ours.args.sliding_window is None
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.array(ours(mx.array(ids))), expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="sliding_window is not part of the llama architecture"):
        ModelArgs(**{k: v for k, v in BASE.items() if k != "model_type"}, model_type="llama", sliding_window=8)


@pytest.mark.parametrize("model_type", ["mistral", "llama", "mixtral", "qwen2", "qwen3"])
def test_defaults_are_transformers_defaults(model_type):
    """A key a config leaves out means what it means to transformers (Mistral: a 4096 window,
    Mixtral: eps 1e-5 and theta 1e6, Qwen3: head_dim 128)."""
    from transformers import AutoConfig

    config = {k: v for k, v in BASE.items() if k not in ("rms_norm_eps", "rope_theta")} | {"model_type": model_type}
    ours, theirs = ModelArgs.from_hf_config(config), AutoConfig.for_model(**config)
    assert ours.rms_norm_eps == theirs.rms_norm_eps
    assert ours.sliding_window == getattr(theirs, "sliding_window", None)
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.head_dim == (getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads)
    assert ours.tie_word_embeddings == theirs.tie_word_embeddings
    for window in (None, 16):  # what mlxspec writes reads back the same, a missing window included
        args = ModelArgs.from_hf_config({**config, "sliding_window": window})
        assert ModelArgs.from_hf_config(args.to_hf_config()) == args
