"""A damaged or mismatched adapter folder is one `error:` line naming the file and what is
wrong, never a traceback: from the command line and as typed errors of the library."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.errors import CheckpointError, ConfigError, InputError
from hostile_inputs import one_error_line, tiny_model

CONFIG = {"fine_tune_type": "lora", "num_layers": 1,
          "lora_parameters": {"rank": 4, "scale": 10.0, "dropout": 0.0, "keys": ["self_attn.q_proj"]}}


def adapter_folder(folder: Path, config: dict | None = None, tensors: dict | None = None) -> Path:
    """A LoRA adapter of the last block's q_proj for `tiny_model` (hidden 64, rank 4)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if tensors is None:
        tensors = {"model.layers.1.self_attn.q_proj.lora_a": (64, 4), "model.layers.1.self_attn.q_proj.lora_b": (4, 64)}
    mx.save_safetensors(str(folder / "adapters.safetensors"),
                        {k: mx.array(rng.standard_normal(s).astype(np.float32)) for k, s in tensors.items()})
    (folder / "adapter_config.json").write_text(json.dumps(CONFIG if config is None else config))
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("adapter-model"))


def with_lora(**changes) -> dict:
    return {**CONFIG, "lora_parameters": {**CONFIG["lora_parameters"], **changes}}


def damage(folder: Path, case: str) -> str:
    """Damage a good adapter folder as `case` says; the text its error line must hold."""
    return damage_files(folder, case) or damage_tensors(folder, case) or damage_config(folder, case)


def damage_files(folder: Path, case: str) -> str | None:
    """Files missing, garbled or cut short."""
    config, weights = folder / "adapter_config.json", folder / "adapters.safetensors"
    if case == "no config":
        config.unlink()
        return "adapter_config.json: missing"
    if case == "garbled config":
        config.write_text('{"fine_tune_type": "lora", "num_la')
        return "adapter_config.json is not valid JSON"
    if case == "no weights":
        weights.unlink()
        return "adapters.safetensors: missing"
    if case == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
        return "adapters.safetensors"
    return None


def damage_tensors(folder: Path, case: str) -> str | None:
    """Tensors of the wrong names or shapes."""
    q = "model.layers.1.self_attn.q_proj"
    if case == "wrong shapes":
        adapter_folder(folder, tensors={f"{q}.lora_a": (32, 4), f"{q}.lora_b": (4, 64)})
        return "has shape (32, 4), the model's layer needs (64, 4)"
    if case == "ranks disagree":
        adapter_folder(folder, tensors={f"{q}.lora_a": (64, 4), f"{q}.lora_b": (8, 64)})
        return "not of rank 4"
    if case == "tensor names no module":
        adapter_folder(folder, tensors={f"{q}.lora_a": (64, 4), f"{q}.lora_b": (4, 64),
                                        "model.layers.1.self_attn.nope.lora_a": (64, 4),
                                        "model.layers.1.self_attn.nope.lora_b": (4, 64)})
        return "'model.layers.1.self_attn.nope' names no module of this model"
    if case == "tensor outside the adapted blocks":
        adapter_folder(folder, tensors={f"{q}.lora_a": (64, 4), f"{q}.lora_b": (4, 64),
                                        "model.layers.0.self_attn.q_proj.lora_a": (64, 4),
                                        "model.layers.0.self_attn.q_proj.lora_b": (4, 64)})
        return "is not adapted by this adapter's keys and num_layers"
    if case == "a tensor missing":
        adapter_folder(folder, tensors={f"{q}.lora_a": (64, 4)})
        return "has no 'lora_b' tensor"
    if case == "integer tensor":
        mx.save_safetensors(str(folder / "adapters.safetensors"), {f"{q}.lora_a": mx.zeros((64, 4), dtype=mx.int32),
                                                                   f"{q}.lora_b": mx.zeros((4, 64))})
        return "is I32, not floating point"
    if case == "not a lora tensor":
        adapter_folder(folder, tensors={f"{q}.weight": (64, 64)})
        return "is not a lora parameter"
    return None


def damage_config(folder: Path, case: str) -> str:
    """adapter_config.json holding what no adapter can be."""
    config = folder / "adapter_config.json"
    if case == "unknown fine_tune_type":
        config.write_text(json.dumps({**CONFIG, "fine_tune_type": "qlora"}))
        return "unknown fine_tune_type 'qlora'"
    if case == "num_layers too large":
        config.write_text(json.dumps({**CONFIG, "num_layers": 3}))
        return "num_layers 3 but this model has 2 blocks"
    if case == "num_layers not a number":
        config.write_text(json.dumps({**CONFIG, "num_layers": "all"}))
        return "num_layers must be an integer"
    if case == "key names no module":
        config.write_text(json.dumps(with_lora(keys=["self_attn.query"])))
        return "keys names 'self_attn.query', which is no module"
    if case == "alpha instead of scale":
        params = {k: v for k, v in CONFIG["lora_parameters"].items() if k != "scale"}
        config.write_text(json.dumps({**CONFIG, "lora_parameters": {**params, "alpha": 16}}))
        return "has 'alpha' but no 'scale'"
    if case == "rank zero":
        config.write_text(json.dumps(with_lora(rank=0)))
        return "rank must be a positive integer"
    raise AssertionError(case)


CASES = ["no config", "garbled config", "no weights", "truncated weights", "wrong shapes", "ranks disagree",
         "unknown fine_tune_type", "num_layers too large", "num_layers not a number", "key names no module",
         "tensor names no module", "tensor outside the adapted blocks", "a tensor missing", "not a lora tensor",
         "alpha instead of scale", "rank zero", "integer tensor"]


def test_the_good_folder_loads(model, tmp_path):
    adapted, _ = mlxspec.load(model, adapter=adapter_folder(tmp_path / "a"))
    plain, _ = mlxspec.load(model)
    tokens = mx.array([[1, 20, 300]])
    assert float(mx.abs(adapted(tokens) - plain(tokens)).max()) > 1e-3


def test_an_older_mlx_lms_lora_layers_key_reads_as_num_layers(model, tmp_path):
    new = adapter_folder(tmp_path / "new")
    old = adapter_folder(tmp_path / "old", {"lora_layers": 1, "lora_parameters": CONFIG["lora_parameters"]})
    tokens = mx.array([[1, 20, 300]])
    assert mx.array_equal(mlxspec.load(model, adapter=old)[0](tokens), mlxspec.load(model, adapter=new)[0](tokens))


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_adapter_is_one_line_naming_the_file(model, tmp_path, capsys, case):
    folder = adapter_folder(tmp_path / "adapter")
    expected = damage(folder, case)
    line = one_error_line(["generate", "--model", str(model), "--adapter", str(folder), "-p", "hi",
                           "--max-tokens", "2"], capsys)
    assert expected in line and str(folder) in line, line
    with pytest.raises((CheckpointError, ConfigError)):
        mlxspec.load(model, adapter=folder)


def test_a_damaged_adapter_is_refused_before_the_model_loads(tmp_path, capsys):
    folder = adapter_folder(tmp_path / "adapter")
    damage(folder, "unknown fine_tune_type")
    line = one_error_line(["generate", "--model", str(tmp_path / "no-such-model"), "--adapter", str(folder),
                           "-p", "hi"], capsys)
    assert "fine_tune_type" in line


@pytest.mark.parametrize("case", ["missing", "a file", "empty"])
def test_an_adapter_path_that_is_no_folder(model, tmp_path, capsys, case):
    path = tmp_path / "adapter"
    if case == "a file":
        path.write_text("{}")
    line = one_error_line(["chat", "--model", str(model), "--adapter", "" if case == "empty" else str(path)], capsys)
    assert {"missing": "no such adapter folder", "a file": "not a file", "empty": "the adapter path is empty"}[case] in line
    if case == "empty":
        return
    with pytest.raises(InputError):
        mlxspec.load(model, adapter=path)


def test_convert_refuses_a_damaged_adapter_and_writes_nothing(model, tmp_path, capsys):
    folder = adapter_folder(tmp_path / "adapter")
    damage(folder, "wrong shapes")
    line = one_error_line(["convert", str(model), "-o", str(tmp_path / "out"), "--adapter", str(folder)], capsys)
    assert "has shape (32, 4)" in line and not (tmp_path / "out").exists()


def test_adapter_with_pipeline_or_pair_conversion_is_one_line(model, tmp_path, capsys):
    folder = adapter_folder(tmp_path / "adapter")
    line = one_error_line(["generate", "--model", str(model), "--adapter", str(folder), "--pipeline", "-p", "hi"],
                          capsys)
    assert "--adapter does not go with --pipeline" in line
    line = one_error_line(["convert", "--target", str(model), "--draft", str(model), "-o", str(tmp_path / "p"),
                           "--adapter", str(folder)], capsys)
    assert "--adapter folds into one model" in line
