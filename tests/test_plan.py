"""`mlxspec plan`: its numbers for tiny checkpoints computed by hand and against what loading
really allocates, every source (folder, quantized folder, GGUF header, pair, feature draft, a
mocked Hub id), the chips table against llama.cpp's published figures, JSON, one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from typer.testing import CliRunner

from mlxspec.cli import app
from mlxspec.convert.converter import convert
from mlxspec.errors import ConfigError
from mlxspec.layout import hf_tensor_shapes
from mlxspec.load import load
from mlxspec.models import ModelArgs
from mlxspec.plan import FitRequest, make_plan
from mlxspec.plan.chips import CHIPS, find_chip
from mlxspec.plan.device import named_device
from mlxspec.plan.footprint import footprint
from mlxspec.plan.hub_metadata import hub_model
from mlxspec.plan.named import Named, projection
from mlxspec.plan.shape import Tensor, from_args
from mlxspec.plan.sources import read_gguf, read_model

from conftest import TINY, make_hf_checkpoint

# llama.cpp's "Performance of llama.cpp on Apple Silicon M-series" (github.com/ggml-org/llama.cpp/discussions/4167):
# LLaMA 7B Q4_0 text generation (tg128), tok/s, per chip
LLAMA_CPP_TG128 = {"M1": 14.2, "M2": 21.9, "M3": 21.3, "M1 Pro": 36.4, "M2 Max": 66.0, "M4 Pro": 50.7}
LLAMA_7B = ModelArgs(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008, num_attention_heads=32,
                     vocab_size=32000, model_type="llama", max_position_embeddings=2048)
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, hf_tokenizer_dir) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("tiny"), hf_tokenizer_dir, seed=3)


@pytest.fixture(scope="module")
def tiny_q4(tmp_path_factory, tiny_dir) -> Path:
    out = tmp_path_factory.mktemp("q") / "q4"
    convert(str(tiny_dir), str(out), bits=4, group_size=32)
    return out


def test_tiny_checkpoint_numbers_by_hand(tiny_dir):
    shape = read_model(tiny_dir)
    elements = sum(math.prod(s) for _, s in hf_tensor_shapes(ModelArgs(**TINY)))
    fp = footprint(shape, FitRequest(context=300, dequantize=True), 300)
    assert fp.weights_stored == fp.weights_loaded == 4 * elements
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    per_token = 2 * TINY["num_hidden_layers"] * TINY["num_key_value_heads"] * head_dim * 4
    assert fp.kv_per_token == per_token
    assert fp.kv_cache == 512 * per_token  # a growing cache allocates 256 positions at a time
    half = footprint(shape, FitRequest(context=300, dequantize=True, kv_bits=4, kv_group_size=64), 300)
    assert half.kv_per_token == math.ceil(per_token / 4 * (0.5 + 2 * 4 / 64))
    assert half.kv_cache <= 0.3 * fp.kv_cache
    windowed = from_args("w", ModelArgs(**{**TINY, "sliding_window": 64}), shape.tensors)
    assert footprint(windowed, FitRequest(context=300, draft_tokens=6), 300).kv_cache == (64 + 6) * per_token


@pytest.mark.parametrize("dequantize", [True, False])
def test_loaded_bytes_equal_what_loading_allocates(tiny_q4, dequantize):
    shape = read_model(tiny_q4)
    planned = footprint(shape, FitRequest(dequantize=dequantize), 16).weights_loaded
    model, _ = load(tiny_q4, dtype=mx.float32 if dequantize else None, dequantize=dequantize)
    assert planned == sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    assert footprint(shape, FitRequest(dequantize=True), 16).weights_stored < planned or not dequantize


def test_gguf_header(tmp_path, tiny_dir, sp_model_file):
    import gguf
    from gguf_writer import write_gguf

    path = write_gguf(tiny_dir, tmp_path / "m.gguf", sp_model_file, types={"q_proj": gguf.GGMLQuantizationType.Q8_0})
    shape = read_gguf(path)
    assert (shape.layers, shape.kv_heads, shape.stored_format) == (2, 2, "gguf")
    q = next(t for t in shape.tensors if t.name == "blk.0.attn_q.weight")
    assert (q.dtype, q.nbytes) == ("Q8_0", 64 * 64 // 32 * 34)
    assert footprint(shape, FitRequest(dequantize=True), 16).weights_loaded == 4 * sum(t.elements for t in shape.tensors)


def test_pair_and_feature_draft(tmp_path, tiny_dir):
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "target").symlink_to(tiny_dir)
    (pair / "draft").symlink_to(tiny_dir)
    (pair / "pair.json").write_text(json.dumps({"target": "target", "draft": "draft"}))
    out = json.loads(invoke("plan", "--pair", str(pair), "--context", "256", "--json").output)
    assert out["draft_footprint"]["kv_cache"] == out["target_footprint"]["kv_cache"]
    target = out["target_footprint"]
    running = 2 * target["weights_loaded"] + 2 * target["kv_cache"] + out["activations"]
    assert out["total"] == max(out["load_peak"], running)
    folder = Path(__file__).parents[1] / "mlxspec" / "assets" / "smollm2-eagle"
    eagle, config = read_model(folder), json.loads((folder / "config.json").read_text())
    assert eagle.feature_draft and eagle.layers == config["num_hidden_layers"]
    fp = footprint(eagle, FitRequest(dequantize=True), 300)
    assert fp.kv_cache == 512 * 2 * eagle.layers * config["num_key_value_heads"] * eagle.head_dim * 4


class FakeHub:
    def __init__(self, config):
        self.config_data = config

    def config(self, repo_id):
        return self.config_data

    def tensors(self, repo_id):
        return [Tensor(n, s, "BF16", 2 * math.prod(s)) for n, s in hf_tensor_shapes(ModelArgs(**TINY))]


def test_hub_id_from_metadata_alone(monkeypatch):
    config = {**TINY, "model_type": "mistral"}
    shape = hub_model("org/model", FakeHub(config))
    assert shape.layers == 2 and footprint(shape, FitRequest(), 16).float_bytes == 2
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="cannot be read offline"):
        hub_model("org/model")


def test_projection_matches_llama_cpp_figures():
    tensors = [Tensor(n, s, "Q4_0" if len(s) == 2 else "F32", math.prod(s) // 32 * 18 if len(s) == 2 else 4 * math.prod(s))
               for n, s in hf_tensor_shapes(LLAMA_7B)]
    shape = from_args("llama-7b", LLAMA_7B, tensors)
    shape.stored_format = "gguf"
    for name, published in LLAMA_CPP_TG128.items():
        chip = find_chip(name)
        plan = make_plan(shape, None, FitRequest(context=128), named_device(f"{name}:{max(chip.memory)}"))
        tps = projection(plan, Named(shape, None, None, None)).plain
        assert abs(tps - published) / published <= 0.2, (name, tps, published)
    assert {c.name for c in CHIPS} >= set(LLAMA_CPP_TG128)


def test_json_exit_status_and_advice(tiny_dir):
    fits = invoke("plan", str(tiny_dir), "--json")
    assert fits.exit_code == 0 and json.loads(fits.output)["fits"] is True
    huge = invoke("plan", str(tiny_dir), "--context", "100000000", "--batch", "10000", "--device", "M1:8")
    assert huge.exit_code == 3 and "does not fit" in huge.output and "--kv-bits 4 saves" in huge.output
    assert "fits), saving" in huge.output  # a --batch that fits (the window caps the context)
    assert "projection at 68.25 GB/s" in invoke("plan", str(tiny_dir), "--device", "M1").output


@pytest.mark.parametrize("bad, line", [("{", "not valid JSON"), ('{"model_type": "mistral"}', "lacks required key")])
def test_malformed_config_is_one_line(tmp_path, tiny_dir, bad, line):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(tiny_dir / "model.safetensors")
    (folder / "config.json").write_text(bad)
    result = invoke("plan", str(folder))
    assert result.exit_code != 0 and line in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0


def test_hub_id_through_the_command(monkeypatch):
    monkeypatch.setattr("mlxspec.plan.hub_metadata.hub_unreachable", lambda: None)
    monkeypatch.setattr("mlxspec.plan.hub_metadata.offline", lambda: False)
    fake = FakeHub({**TINY, "model_type": "llama"})
    monkeypatch.setattr("mlxspec.plan.hub_metadata.HubMetadata.config", lambda self, repo: fake.config(repo))
    monkeypatch.setattr("mlxspec.plan.hub_metadata.HubMetadata.tensors", lambda self, repo: fake.tensors(repo))
    out = json.loads(invoke("plan", "org/tiny-model", "--keep-quantized", "--json").output)
    assert out["target"] == "org/tiny-model"
    assert out["target_footprint"]["weights_stored"] == sum(t.nbytes for t in fake.tensors("org/tiny-model"))


def test_architecture_outside_the_port(tmp_path, tiny_dir):
    folder = tmp_path / "phi"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(tiny_dir / "model.safetensors")
    config = {"model_type": "phi3", "num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 1, "vocab_size": 100, "sliding_window": 32}
    (folder / "config.json").write_text(json.dumps(config))
    shape = read_model(folder)
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.windowed_layers) == (3, 1, 16, 3)
