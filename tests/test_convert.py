"""`mlxspec convert`: quantized output close to the original and identical to mlx-lm's,
every input layout giving the same weights, atomic output, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.models.config import load_model_args
from conftest import make_hf_checkpoint
from synthetic import write_mistral_checkpoint_from_hf, write_random_hf_checkpoint
from mlxspec.errors import CheckpointError, InputError

PROMPT = "The capital of France is"


def all_weights(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({k: np.array(v) for k, v in mx.load(str(f)).items()})
    return out


def greedy(folder: Path, n: int = 20) -> list[int]:
    model, tok = mlxspec.load(folder)
    return [s.token for s in mlxspec.stream_generate(model, tok, PROMPT, max_tokens=n)]


def logits_of(folder: Path) -> np.ndarray:
    model, _ = mlxspec.load(folder)
    toks = mx.array(np.random.default_rng(0).integers(0, 32000, size=(1, 64)))
    return np.array(model(toks))


@pytest.mark.parametrize("bits, tolerance", [(8, 0.02), (4, 0.25)])
def test_quantized_close_to_original_and_equal_to_mlx_lm(hf_full_dir, tmp_path, bits, tolerance):
    """Tolerance: RMS logit error relative to the logits' own RMS. Affine quantization with
    64-column groups has per-weight error ~ range/2^bits; through two layers that gives
    ~0.5% (8-bit) and ~10% (4-bit) here, so the bounds leave ~3x headroom."""
    import mlx_lm

    ours = mlxspec.convert(hf_full_dir, tmp_path / "ours", bits=bits, group_size=64)
    theirs = tmp_path / "mlx-lm"
    mlx_lm.convert(str(hf_full_dir), mlx_path=str(theirs), quantize=True, q_bits=bits, q_group_size=64, dtype="float32")
    ref = logits_of(hf_full_dir)
    rel = np.sqrt(np.mean((logits_of(ours) - ref) ** 2)) / np.sqrt(np.mean(ref**2))
    assert rel < tolerance
    assert greedy(ours) == greedy(theirs)
    # mlx-lm reads what mlxspec writes and decodes the same tokens
    model, tok = mlx_lm.load(str(ours))
    ids = mlxspec.load(ours)[1].encode(PROMPT)
    from mlx_lm.generate import generate_step

    theirs_tokens = [int(t) for (t, _), _ in zip(generate_step(mx.array(ids), model, max_tokens=20), range(20))]
    assert theirs_tokens == greedy(ours)
    config = json.loads((ours / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}


def test_layouts_convert_to_identical_weights(hf_window_dir, tmp_path):
    args = load_model_args(hf_window_dir)
    sharded = write_random_hf_checkpoint(tmp_path / "sharded", args, seed=5, shard_bytes=200_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    for f in hf_window_dir.glob("tokenizer*"):
        shutil.copy(f, sharded / f.name)
    mistral = write_mistral_checkpoint_from_hf(sharded, tmp_path / "mistral", args)
    for bits in (None, 4):
        a = mlxspec.convert(sharded, tmp_path / f"a{bits}", bits=bits)
        b = mlxspec.convert(mistral, tmp_path / f"b{bits}", bits=bits)
        wa, wb = all_weights(a), all_weights(b)
        assert wa.keys() == wb.keys()
        assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    original = mlxspec.load(sharded)[0]
    converted = mlxspec.load(tmp_path / "bNone")[0]
    toks = mx.array([[1, 415, 5565, 302, 4843, 349] * 5])
    assert mx.abs(original(toks) - converted(toks)).max().item() < 1e-5


def test_pytorch_pickles_convert_like_safetensors(hf_window_dir, tmp_path):
    import torch

    args = load_model_args(hf_window_dir)
    weights = {k: torch.from_numpy(v.copy()) for k, v in all_weights(hf_window_dir).items()}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(weights, bin_dir / "pytorch_model.bin")
    shutil.copy(hf_window_dir / "config.json", bin_dir / "config.json")
    mistral = write_mistral_checkpoint_from_hf(hf_window_dir, tmp_path / "mistral", args)
    pth_dir = tmp_path / "pth"
    pth_dir.mkdir()
    shutil.copy(mistral / "params.json", pth_dir / "params.json")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in all_weights(mistral).items()}, pth_dir / "consolidated.00.pth")
    ref = all_weights(mlxspec.convert(hf_window_dir, tmp_path / "ref"))
    for src in (bin_dir, pth_dir):
        got = all_weights(mlxspec.convert(src, tmp_path / f"out-{src.name}"))
        assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)


def test_output_shards_load_everywhere(hf_full_dir, tmp_path):
    import mlx_lm

    out = mlxspec.convert(hf_full_dir, tmp_path / "out", bits=8, max_shard_bytes=500_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and all((out / s).is_file() for s in shards)
    mlx_lm.load(str(out))
    assert greedy(out, 8) == greedy(mlxspec.convert(hf_full_dir, tmp_path / "one", bits=8), 8)


def test_existing_output_needs_force(hf_full_dir, tmp_path):
    out = tmp_path / "out"
    mlxspec.convert(hf_full_dir, out)
    with pytest.raises(mlxspec.OutputError, match="already exists; pass --force"):
        mlxspec.convert(hf_full_dir, out, bits=8)
    assert "quantization" not in json.loads((out / "config.json").read_text())
    mlxspec.convert(hf_full_dir, out, bits=8, force=True)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_interrupted_conversion_leaves_old_output(hf_full_dir, tmp_path):
    out = tmp_path / "out"
    mlxspec.convert(hf_full_dir, out)
    before = all_weights(out)

    def interrupt(done, total, name):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mlxspec.convert(hf_full_dir, out, bits=4, force=True, progress=interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    after = all_weights(out)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_killed_conversion_leaves_nothing_behind(hf_full_dir, tmp_path):
    out = tmp_path / "out"
    script = (
        "import os, signal, sys, mlxspec\n"
        "def die(done, total, name):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"mlxspec.convert({str(hf_full_dir)!r}, {str(out)!r}, max_shard_bytes=100_000, progress=die)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert res.returncode == -9
    assert not out.exists()
    assert len(list(tmp_path.glob(".out.mlxspec-tmp-*"))) == 1  # the killed run's leftovers
    mlxspec.convert(hf_full_dir, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_bad_inputs(hf_full_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(hf_full_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        mlxspec.convert(broken, tmp_path / "o1")
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        mlxspec.convert(broken, tmp_path / "o2")
    with pytest.raises(CheckpointError, match="tensor '.*' has 64 columns, not divisible by group size 128"):
        mlxspec.convert(hf_full_dir, tmp_path / "o3", bits=4, group_size=128)
    with pytest.raises(InputError, match="--bits"):
        mlxspec.convert(hf_full_dir, tmp_path / "o4", bits=5)
    cfg = json.loads((hf_full_dir / "config.json").read_text())
    shutil.copy(hf_full_dir / "model.safetensors", broken / "model.safetensors")
    (broken / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    with pytest.raises(CheckpointError, match="tensor 'model.layers.0.mlp.*' has shape .* config implies"):
        mlxspec.convert(broken, tmp_path / "o5")
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": "no_such_arch"}))
    with pytest.raises(mlxspec.ConfigError, match="unsupported architecture 'no_such_arch'"):
        mlxspec.convert(broken, tmp_path / "o6")
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": "mixtral"}))  # dense weights, MoE config
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.mlp.down_proj.weight' for a mixtral"):
        mlxspec.convert(broken, tmp_path / "o7")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_errors_and_help(hf_full_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(hf_full_dir, broken)
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:5000])
    res = run_cli("convert", str(broken), "-o", str(tmp_path / "out"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken / 'model.safetensors'}: truncated")
    res = run_cli("convert", "no-such-org/no-such-model", "-o", str(tmp_path / "out"))
    assert res.returncode != 0 and "not in the Hugging Face cache" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("convert", "--help")
    for option in ("--out", "--bits", "--group-size", "--dtype", "--force", "--revision", "--target",
                   "--draft", "--draft-bits", "--max-shard-size", "--quiet"):
        assert option in res.stdout


def test_pair(hf_full_dir, hf_window_dir, sp_model_file, tmp_path):
    res = run_cli("convert", "--target", str(hf_full_dir), "--draft", str(hf_window_dir), "-o", str(tmp_path / "pair"),
                  "--bits", "8", "--draft-bits", "4")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "pair" / "pair.json").read_text())
    assert manifest["kind"] == "same-vocabulary" and manifest["tokenizers"].startswith("same 32000 pieces")
    assert "pair: same-vocabulary" in res.stderr
    assert json.loads((tmp_path / "pair" / "draft" / "config.json").read_text())["quantization"]["bits"] == 4
    assert json.loads((tmp_path / "pair" / "target" / "config.json").read_text())["quantization"]["bits"] == 8
    mlxspec.load_pair(tmp_path / "pair")


def test_a_tokenizer_larger_than_the_embeddings_is_refused_before_writing(hf_full_dir, sp_model_file, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(hf_full_dir, bad)
    for f in bad.glob("tokenizer*"):
        f.unlink()
    shutil.copy(Path(str(sp_model_file)).with_name("mistral_instruct_tokenizer_240216.model.v2"),
                bad / "tokenizer.model")
    with pytest.raises(mlxspec.ConfigError, match="the tokenizer has 32768 tokens but the model only 32000"):
        mlxspec.convert(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


@pytest.mark.parametrize("change, message", [
    ({"target": 3}, "'target' must name a folder inside"),
    ({"draft": "../elsewhere"}, "'draft' must name a folder inside"),
    ({"draft": None}, "'draft' must name a folder inside"),
    ({"kind": "telepathy"}, "pair kind 'telepathy' is not one this mlxspec runs"),
    ({"format": "something-else"}, "not an mlxspec pair manifest"),
    ({"version": 99}, "written by a newer mlxspec"),
    ({"version": "2"}, "written by a newer mlxspec"),
])
def test_pair_manifest_with_wrong_types(change, message, hf_full_dir, tmp_path):
    from mlxspec.convert.pair import convert_pair

    manifest = convert_pair(hf_full_dir, hf_full_dir, tmp_path / "pair")
    (tmp_path / "pair" / "pair.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(mlxspec.ConfigError, match=message):
        mlxspec.load_pair(tmp_path / "pair")


def test_hub_fetch_asks_only_for_needed_files(monkeypatch, tmp_path):
    import huggingface_hub

    from mlxspec import hub

    listing = ["config.json", "params.json", "consolidated.safetensors", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.model.v3", "README.md"]
    calls = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo, revision=None: listing)

    def fake_snapshot(repo, revision=None, allow_patterns=None, local_files_only=False):
        calls.update(repo=repo, revision=revision, patterns=allow_patterns)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    assert hub.fetch("mistralai/Mistral-7B-v0.3", revision="main") == tmp_path
    assert calls["revision"] == "main" and "model*.safetensors" in calls["patterns"]
    assert "consolidated*.safetensors" not in calls["patterns"]  # never two copies of the weights
    assert hub.weight_patterns(["params.json", "consolidated.safetensors"]) == ["consolidated*.safetensors"]
    assert hub.weight_patterns(["pytorch_model.bin"]) == ["pytorch_model*.bin"]


@pytest.mark.parametrize("options, error, message", [
    ({"bits": "4"}, mlxspec.InputTypeError, "bits must be an integer, got '4'"),
    ({"bits": 4, "group_size": 64.0}, mlxspec.InputTypeError, "group_size must be an integer"),
    ({"max_shard_bytes": 0}, InputError, "max_shard_bytes must be positive"),
    ({"bits": 7}, InputError, "--bits must be one of"),
    ({"dtype": "float8"}, InputError, "--dtype must be one of"),
])
def test_convert_options(options, error, message, hf_window_dir, tmp_path):
    with pytest.raises(error, match=message):
        mlxspec.convert(hf_window_dir, tmp_path / "out", **options)
    with pytest.raises(mlxspec.InputTypeError, match="src must be a path"):
        mlxspec.convert(3, tmp_path / "out")
