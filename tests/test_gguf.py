"""GGUF input: files written by llama.cpp's own `gguf` package convert to the same logits
as the HF-layout original (pins the RoPE layout), block formats decode exactly, the
tokenizer rebuilt from metadata matches SentencePiece / llama.cpp, and the real
SmolLM2-135M-Instruct file converts and generates what it generated when recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlxspec import convert
from mlxspec.convert import gguf as gguf_format
from mlxspec.convert.gguf_config import model_args
from mlxspec.errors import CheckpointError, ConfigError
from mlxspec.load import load, load_model

from conftest import make_hf_checkpoint, smollm2_or_skip
from gguf_writer import write_gguf
from record_llama_cpp_tokens import FIXTURE as LLAMA_CPP_FIXTURE, TEXTS as LLAMA_CPP_TEXTS, tokenize as record_tokenize

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory, hf_tokenizer_dir) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf-llama"), hf_tokenizer_dir, seed=5,
                              sliding_window=None, rope_theta=5e5)


def test_f32_gguf_gives_the_original_logits(hf_llama, sp_model_file, tmp_path):
    """Pins the RoPE layout: llama.cpp's interleaved q/k rows come back as rotate-half."""
    src = write_gguf(hf_llama, tmp_path / "m.gguf", sp_model_file)
    out = convert(src, tmp_path / "mlx")
    tokens = mx.array([[1, 415, 2936, 9060, 285, 1142, 28705, 28770, 28734, 754, 272, 17898]])
    ours = load_model(out)(tokens)
    original = load_model(hf_llama)(tokens)
    assert mx.abs(ours - original).max().item() < 1e-4
    assert json.loads((out / "config.json").read_text())["rope_theta"] == 5e5


def test_a_llama_gguf_ignores_a_sliding_window_key_as_llama_cpp_does(hf_llama, sp_model_file, tmp_path):
    src = write_gguf(hf_llama, tmp_path / "m.gguf", sp_model_file, window=4)
    out = convert(src, tmp_path / "mlx")
    assert "sliding_window" not in json.loads((out / "config.json").read_text())
    tokens = mx.array([[1, 415, 2936, 9060, 285, 1142, 28705, 28770, 28734, 754, 272, 17898]])
    assert mx.abs(load_model(out)(tokens) - load_model(hf_llama)(tokens)).max().item() < 1e-4


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.F16])
def test_block_formats_decode_exactly(qtype, hf_llama, sp_model_file, tmp_path):
    """Every tensor equals llama.cpp's own dequantization (gguf.quants.dequantize)."""
    types = {m: qtype for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
    path = write_gguf(hf_llama, tmp_path / "m.gguf", sp_model_file, types)
    header = gguf_format.read_header(path)
    reader = gguf.GGUFReader(str(path))
    theirs = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    for tensor in header.tensors:
        data = gguf_format.read_tensor(header, tensor)
        if isinstance(data, tuple):
            bits = gguf_format.QUANT_BITS[tensor.type_name]
            w, s, b = (mx.array(x) for x in data)
            data = np.array(mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=32, bits=bits))
        np.testing.assert_allclose(np.asarray(data, np.float32), theirs[tensor.name].reshape(tensor.shape),
                                   rtol=1e-6, atol=1e-6)


def test_quantized_gguf_keeps_its_quantization(hf_llama, sp_model_file, tmp_path):
    types = {"q_proj": Q.Q4_1, "k_proj": Q.Q4_0, "v_proj": Q.Q8_0, "o_proj": Q.Q4_0, "gate_proj": Q.Q4_0,
             "up_proj": Q.Q4_0, "down_proj": Q.Q4_0, "embed_tokens": Q.Q8_0}
    src = write_gguf(hf_llama, tmp_path / "m.gguf", sp_model_file, types)
    kept = convert(src, tmp_path / "kept")
    quant = json.loads((kept / "config.json").read_text())["quantization"]
    assert (quant["bits"], quant["group_size"]) == (4, 32)
    assert quant["model.layers.0.self_attn.v_proj"] == {"group_size": 32, "bits": 8}
    assert quant["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    dense = convert(src, tmp_path / "dense", dtype="float32")
    assert "quantization" not in json.loads((dense / "config.json").read_text())
    tokens = mx.array([[1, 415, 2936, 9060, 285, 1142, 28705]])
    a = load_model(kept, dtype=mx.float32)(tokens)
    b = load_model(dense)(tokens)
    c = load_model(kept, dequantize=True)(tokens)
    assert mx.abs(a - b).max().item() < 1e-3  # the same weights, quantized vs expanded
    assert mx.abs(c - b).max().item() < 1e-5
    import mlx_lm

    theirs, _ = mlx_lm.load(str(kept))
    assert mx.abs(theirs(tokens).astype(mx.float32) - load_model(kept)(tokens).astype(mx.float32)).max().item() < 1e-2


def test_sentencepiece_tokenizer_from_metadata_matches_sentencepiece(hf_llama, sp_model_file, tmp_path):
    import sentencepiece as spm

    out = convert(write_gguf(hf_llama, tmp_path / "m.gguf", sp_model_file), tmp_path / "mlx")
    _, tok = load(out)
    sp = spm.SentencePieceProcessor(model_file=str(sp_model_file))
    for text in ["Hello world", "  two leading spaces", "naïve café déjà vu", "日本語のテキスト", "emoji 🧪 test",
                 "def f(x):\n    return x * 2\n", "1234567 + 89 = ?", "tabs\tand\nnewlines"]:
        assert tok.encode(text) == [1, *sp.encode(text)], text
        assert tok.decode(tok.encode(text)) == text


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    return convert(smollm2_or_skip(), tmp_path_factory.mktemp("smol") / "mlx")


# Recorded once from the converted model (greedy, fp32 expansion of the Q4_1 weights),
# and checked against mlx-lm on the same folder in the test below.
GOLDEN_PROMPT = "What is the capital of France?"
GOLDEN_IDS = [504, 3575, 282, 4649, 314, 7042, 30, 2, 198, 2, 1, 9690]  # "The capital of France is Paris."


def test_smollm2_tokenizer_matches_llama_cpp_and_special_tokens(smollm2_dir):
    """The tokenizer rebuilt from the GGUF file gives llama.cpp's ids (recorded by
    tests/record_llama_cpp_tokens.py; checked against llama.cpp live where it is installed)."""
    _, tok = load(smollm2_dir)
    assert tok.eos_ids == {2} and tok.bos_id == 1
    pieces = tok.pieces()
    assert pieces[1] == "<|im_start|>" and pieces[2] == "<|im_end|>"
    cases = json.loads(LLAMA_CPP_FIXTURE.read_text(encoding="utf-8"))["cases"]
    assert [c["text"] for c in cases] == LLAMA_CPP_TEXTS, "texts changed: run tests/record_llama_cpp_tokens.py"
    for case in cases:
        ids = tok.encode(case["text"])
        assert ids == case["ids"], case["text"]
        if "<|" not in case["text"]:  # special tokens are not printed
            assert tok.decode(ids) == case["text"]
    chat = tok.apply_chat("Hi")
    assert chat[0] == 1 and chat[-3:] == tok.encode("assistant\n")[-3:] or tok.decode(chat).endswith("assistant\n")
    assert tok.decode(chat).count("<|im_start|>") == 0  # special tokens are not printed


def test_the_recorded_llama_cpp_ids_are_llama_cpp_s_own():
    """Where llama-cpp-python is installed (`.[oracles]`, as CI does), the recording is live."""
    pytest.importorskip("llama_cpp")
    cases = json.loads(LLAMA_CPP_FIXTURE.read_text(encoding="utf-8"))["cases"]
    assert record_tokenize(smollm2_or_skip(), LLAMA_CPP_TEXTS) == [c["ids"] for c in cases]


def test_smollm2_golden_continuation(smollm2_dir):
    """Stable greedy output of the real model, equal to mlx-lm's on the same weights."""
    import mlx_lm
    from mlx_lm.generate import generate_step

    from mlxspec.engine import stream_generate

    model, tok = load(smollm2_dir, dtype=mx.float32, dequantize=True)
    ids = tok.apply_chat(GOLDEN_PROMPT)
    ours = [s.token for s in stream_generate(model, None, ids, max_tokens=12)]
    theirs_model, _ = mlx_lm.load(str(smollm2_dir))
    theirs = [int(t) for (t, _), _ in zip(generate_step(mx.array(ids), theirs_model, max_tokens=12), range(12))]
    assert ours == theirs
    assert "Paris" in tok.decode(ours)
    if GOLDEN_IDS is not None:
        assert ours == GOLDEN_IDS


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True)


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_gguf_files_fail_with_one_line(hf_llama, sp_model_file, tmp_path):
    good = write_gguf(hf_llama, tmp_path / "m.gguf", sp_model_file)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _one_line_error(_cli("convert", str(cut), "-o", str(tmp_path / "o1")), "truncated")
    assert not (tmp_path / "o1").exists()
    header_cut = tmp_path / "header.gguf"
    header_cut.write_bytes(good.read_bytes()[:300])
    _one_line_error(_cli("convert", str(header_cut), "-o", str(tmp_path / "o2")), "truncated")
    q5 = write_gguf(hf_llama, tmp_path / "q5.gguf", sp_model_file, {"up_proj": Q.Q5_0})
    _one_line_error(_cli("convert", str(q5), "-o", str(tmp_path / "o3")), "Q5_0", "up")
    other = write_gguf(hf_llama, tmp_path / "gpt2.gguf", sp_model_file, arch="gpt2")
    _one_line_error(_cli("convert", str(other), "-o", str(tmp_path / "o4")), "architecture", "gpt2")
    _one_line_error(_cli("convert", str(tmp_path / "missing.gguf"), "-o", str(tmp_path / "o5")), "no such")
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(CheckpointError, match="not a GGUF"):
        gguf_format.read_header(not_gguf)
    with pytest.raises(ConfigError, match="gpt2"):
        model_args(gguf_format.read_header(other))


@pytest.mark.parametrize("pre, pieces", [("qwen2", ["x", "Ġ", "1", "2", "3"]), ("llama-bpe", ["x", "Ġ", "123"])])
def test_byte_level_pre_tokenizers_split_digits_as_their_models_do(pre, pieces):
    """Qwen2's pre-tokenizer (GGUF `qwen2`) splits digits one by one, Llama 3's in threes."""
    from tokenizers import Tokenizer, pre_tokenizers

    from mlxspec.convert.gguf_tokenizer import tokenizer_files_from_gguf

    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["12", "123"]
    metadata = {"general.architecture": "qwen2", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
                "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["1 2", "12 3"]}
    files = tokenizer_files_from_gguf(gguf_format.GGUFFile(Path("t.gguf"), 3, metadata, [], 0))
    assert Tokenizer.from_str(files["tokenizer.json"]).encode("x 123", add_special_tokens=False).tokens == pieces
