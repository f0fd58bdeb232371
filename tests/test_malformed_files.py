"""Malformed weight files, shard indexes and GGUF files: each gives exactly one `MlxspecError`
of the right kind naming the file (never another exception, nor an output folder), on the
convert path and, for safetensors, on the load path. The tiny valid inputs they break are
built in tests/test_fuzz.py, which mutates the same ones at random."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from mlxspec.convert.converter import convert
from mlxspec.errors import CheckpointError, ConfigError, MlxspecError, TokenizerError
from mlxspec.load import load_model

from synthetic import write_random_hf_checkpoint
from test_fuzz import ARR, BOOL, F32, I32, STR, TINY, U32, U64, gguf_bytes, join_safetensors, tiny_gguf, with_kv

NORM = "model.norm.weight"  # the safetensors entry most cases break (F32, shape [32])
LAYER_NORM = "model.layers.0.input_layernorm.weight"  # another of the same size


def split_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def expect_error(call: Callable[[], Any], error: type[MlxspecError], path: Path) -> None:
    """`call` raises exactly `error`, and its message names `path`."""
    with pytest.raises(MlxspecError) as info:
        call()
    assert type(info.value) is error, repr(info.value)
    assert str(path) in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return write_random_hf_checkpoint(tmp_path_factory.mktemp("tiny") / "hf", TINY)


def entry(**change: Any) -> Callable[[dict, bytes], bytes]:
    """Change fields of NORM's entry (None drops the field)."""
    def mutate(h: dict, data: bytes) -> bytes:
        h[NORM].update(change)
        h[NORM] = {k: v for k, v in h[NORM].items() if v is not None}
        return join_safetensors(h, data)
    return mutate


def header(edit: Callable[[dict], Any]) -> Callable[[dict, bytes], bytes]:
    """Edit the header object in place."""
    def mutate(h: dict, data: bytes) -> bytes:
        edit(h)
        return join_safetensors(h, data)
    return mutate


SAFETENSORS_CASES = {
    "header is a JSON list": lambda h, d: join_safetensors(b"[1, 2]", d),
    "header is a number": lambda h, d: join_safetensors(b"42", d),
    "header is not UTF-8": lambda h, d: join_safetensors(b'{"\xff\xfe": 1}', d),
    "header is not JSON": lambda h, d: join_safetensors(b"{nope", d),
    "header nests deeply": lambda h, d: join_safetensors(b"[" * 50000 + b"]" * 50000, d),
    "header has a 5000-digit number": lambda h, d: join_safetensors(b'{"a": ' + b"9" * 5000 + b"}", d),
    "header length past the end": lambda h, d: struct.pack("<Q", 2**63) + join_safetensors(h, d)[8:],
    "a name twice": lambda h, d: join_safetensors(json.dumps(h).encode()[:-1] + b', "%s": {}}' % NORM.encode(), d),
    "__metadata__ is a list": header(lambda h: h.update(__metadata__=["pt"])),
    "__metadata__ holds a number": header(lambda h: h.update(__metadata__={"format": 1})),
    "entry is a list": header(lambda h: h.update({NORM: [0, 128]})),
    "no data_offsets": entry(data_offsets=None),
    "no dtype": entry(dtype=None),
    "no shape": entry(shape=None),
    "dtype is a number": entry(dtype=4),
    "dtype unsupported": entry(dtype="F64"),
    "shape holds a string": entry(shape=["32"]),
    "shape is negative": entry(shape=[-32]),
    "shape holds a bool": entry(shape=[True] * 32),
    "shape holds a float": entry(shape=[32.0]),
    "shape is a string": entry(shape="32"),
    "shape is giant": entry(shape=[2**40, 2**40]),
    "dimension over int32": entry(shape=[2**31, 0], data_offsets=[0, 0]),
    "three data_offsets": entry(data_offsets=[0, 64, 128]),
    "data_offsets are strings": entry(data_offsets=["0", "128"]),
    "data_offsets reversed": entry(data_offsets=[128, 0]),
    "data_offsets negative": entry(data_offsets=[-128, 0]),
    "data_offsets past the end": entry(shape=[2**20, 2**10], data_offsets=[0, 2**32]),
    "bytes do not match the shape": entry(shape=[16]),
    "tensors overlap": header(lambda h: h[NORM].update(data_offsets=h[LAYER_NORM]["data_offsets"])),
}


@pytest.mark.parametrize("path", ["convert", "load"])
@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_malformed_safetensors(case, path, hf_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(hf_dir, src)
    weights = src / "model.safetensors"
    h, data = split_safetensors(weights)
    weights.write_bytes(SAFETENSORS_CASES[case](h, data))
    call = (lambda: convert(src, tmp_path / "out")) if path == "convert" else (lambda: load_model(src))
    expect_error(call, CheckpointError, weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


INDEX_CASES = {
    "weight_map is a list": lambda wm: sorted(set(wm.values())),
    "weight_map values are ints": lambda wm: {k: 1 for k in wm},
    "weight_map values are lists": lambda wm: {k: [v] for k, v in wm.items()},
    "weight_map values are null": lambda wm: {k: None for k in wm},
    "shard climbs out": lambda wm: {**wm, NORM: "../hf/model.safetensors"},
    "shard is absolute": lambda wm: {**wm, NORM: "/etc/hostname"},
    "shard in a sub-folder": lambda wm: {**wm, NORM: "sub/model.safetensors"},
    "shard is ..": lambda wm: {**wm, NORM: ".."},
    "shard has a NUL": lambda wm: {**wm, NORM: "model\0.safetensors"},
    "shard name too long": lambda wm: {**wm, NORM: "x" * 5000},
    "shard is missing": lambda wm: {**wm, NORM: "model-00009-of-00009.safetensors"},
    "not JSON": None,
}


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory) -> Path:
    return write_random_hf_checkpoint(tmp_path_factory.mktemp("sharded") / "hf", TINY, shard_bytes=40_000)


@pytest.mark.parametrize("case", list(INDEX_CASES))
def test_malformed_shard_index(case, sharded_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sharded_dir, src)
    index = src / "model.safetensors.index.json"
    spec = json.loads(index.read_text())
    assert len(set(spec["weight_map"].values())) > 1
    if INDEX_CASES[case] is None:
        index.write_text("{nope")
    else:
        index.write_text(json.dumps({**spec, "weight_map": INDEX_CASES[case](spec["weight_map"])}))
    expect_error(lambda: convert(src, tmp_path / "out"), CheckpointError, index)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_tensor_in_two_shards(sharded_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sharded_dir, src)
    index = src / "model.safetensors.index.json"
    spec = json.loads(index.read_text())
    first = spec["weight_map"][NORM]
    shutil.copy(src / first, src / "copy.safetensors")
    index.write_text(json.dumps({**spec, "weight_map": {**spec["weight_map"], "x": "copy.safetensors"}}))
    expect_error(lambda: convert(src, tmp_path / "out"), CheckpointError, src / "copy.safetensors")


def kv(key: str, vtype: int | None = None, value: Any = None) -> Callable[[list, list, bytes], bytes]:
    return lambda meta, records, data: gguf_bytes(with_kv(meta, key, vtype, value), records, data)


def record(target: str, **change: Any) -> Callable[[list, list, bytes], bytes]:
    """Change one tensor record: name, type id, shape or offset."""
    def mutate(meta: list, records: list, data: bytes) -> bytes:
        fields = ("name", "type_id", "shape", "offset")
        new = [tuple(change.get(f, v) for f, v in zip(fields, r)) if r[0] == target else r for r in records]
        return gguf_bytes(meta, new, data)
    return mutate


def at(marker: bytes, value: bytes, skip: int = 4) -> Callable[[list, list, bytes], bytes]:
    """Overwrite the bytes `skip` past `marker` (past a key: its value type, then its value)."""
    def mutate(meta: list, records: list, data: bytes) -> bytes:
        out = bytearray(gguf_bytes(meta, records, data))
        pos = out.index(marker) + len(marker) + skip
        out[pos:pos + len(value)] = value
        return bytes(out)
    return mutate


TOKENS = "tokenizer.ggml.tokens"
C, K, T = CheckpointError, ConfigError, TokenizerError
GGUF_CASES = {  # case: (tokenizer kind, mutation, error)
    "alignment 0": ("gpt2", kv("general.alignment", U32, 0), C),
    "alignment negative": ("gpt2", kv("general.alignment", I32, -32), C),
    "alignment a string": ("gpt2", kv("general.alignment", STR, "32"), C),
    "alignment a bool": ("gpt2", kv("general.alignment", BOOL, True), C),
    "alignment not a power of two": ("gpt2", kv("general.alignment", U32, 48), C),
    "head_count a string": ("gpt2", kv("llama.attention.head_count", STR, "4"), K),
    "head_count 0": ("gpt2", kv("llama.attention.head_count", U32, 0), K),
    "head_count an array": ("gpt2", kv("llama.attention.head_count", ARR, (U32, [4, 4])), K),
    "embedding_length 0": ("gpt2", kv("llama.embedding_length", U32, 0), K),
    "embedding_length missing": ("gpt2", kv("llama.embedding_length"), K),
    "rms epsilon a string": ("gpt2", kv("llama.attention.layer_norm_rms_epsilon", STR, "1e-5"), K),
    "rms epsilon NaN": ("gpt2", kv("llama.attention.layer_norm_rms_epsilon", F32, float("nan")), K),
    "odd head_dim": ("gpt2", kv("llama.attention.key_length", U32, 7), K),
    "architecture an array": ("gpt2", kv("general.architecture", ARR, (STR, ["llama"])), K),
    "a billion layers": ("gpt2", kv("llama.block_count", U64, 10**9), C),
    "a dimension of 0": ("gpt2", record("output_norm.weight", shape=(0,)), C),
    "absurd shape": ("gpt2", record("output_norm.weight", shape=(2**32, 2**31)), C),
    "rows not whole blocks": ("gpt2", record("blk.0.ffn_up.weight", shape=(32, 64)), C),
    "five dimensions": ("gpt2", record("output_norm.weight", shape=(1, 1, 1, 1, 32)), C),
    "offset not aligned": ("gpt2", record("output_norm.weight", offset=38400 + 4), C),
    "tensors overlap": ("gpt2", record("output_norm.weight", offset=0), C),
    "offset past the end": ("gpt2", record("output_norm.weight", offset=2**60), C),
    "unknown tensor type": ("gpt2", record("output_norm.weight", type_id=99), C),
    "tensor named twice": ("gpt2", record("output.weight", name="token_embd.weight"), C),
    "metadata key twice": ("gpt2", lambda m, r, d: gguf_bytes(m + [m[2]], r, d), C),
    "key not UTF-8": ("gpt2", lambda m, r, d: gguf_bytes(m + [(b"general.\xff", STR, "x")], r, d), C),
    "an array of arrays": ("gpt2", kv("general.tags", ARR, (ARR, [(U32, [1])])), C),
    "value type 13": ("gpt2", at(b"general.architecture", struct.pack("<I", 13), skip=0), C),
    "2**62 keys": ("gpt2", at(b"GGUF", struct.pack("<Q", 2**62), skip=12), C),
    "string of 2**40 bytes": ("gpt2", at(b"general.architecture", struct.pack("<Q", 2**40)), C),
    "array of 2**40 strings": ("gpt2", at(TOKENS.encode(), struct.pack("<IQ", 8, 2**40)), C),
    "tokens are ints": ("gpt2", kv(TOKENS, ARR, (U32, list(range(300)))), T),
    "tokens a string": ("gpt2", kv(TOKENS, STR, "abc"), T),
    "a token twice": ("gpt2", kv(TOKENS, ARR, (STR, ["a"] * 300)), T),
    "token_type short": ("gpt2", kv("tokenizer.ggml.token_type", ARR, (I32, [1] * 299)), T),
    "token_type long": ("gpt2", kv("tokenizer.ggml.token_type", ARR, (I32, [1] * 301)), T),
    "token_type strings": ("gpt2", kv("tokenizer.ggml.token_type", ARR, (STR, ["1"] * 300)), T),
    "scores short": ("llama", kv("tokenizer.ggml.scores", ARR, (F32, [0.0] * 10)), T),
    "scores strings": ("llama", kv("tokenizer.ggml.scores", ARR, (STR, ["0"] * 300)), T),
    "merges are ints": ("gpt2", kv("tokenizer.ggml.merges", ARR, (U32, [1, 2])), T),
    "merge without a space": ("gpt2", kv("tokenizer.ggml.merges", ARR, (STR, ["ab"])), T),
    "merge of unknown tokens": ("gpt2", kv("tokenizer.ggml.merges", ARR, (STR, ["zz qq"])), T),
    "unknown id out of range": ("llama", kv("tokenizer.ggml.unknown_token_id", U32, 300), T),
    "unknown id a string": ("llama", kv("tokenizer.ggml.unknown_token_id", STR, "0"), T),
    "bos id out of range": ("gpt2", kv("tokenizer.ggml.bos_token_id", U32, 10**6), T),
    "eos id negative": ("gpt2", kv("tokenizer.ggml.eos_token_id", I32, -1), T),
    "pre-tokenizer an array": ("gpt2", kv("tokenizer.ggml.pre", ARR, (STR, ["smollm"])), T),
    "chat template an int": ("gpt2", kv("tokenizer.chat_template", U32, 3), T),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_malformed_gguf(case, tmp_path):
    kind, mutate, error = GGUF_CASES[case]
    src = tmp_path / "bad.gguf"
    src.write_bytes(mutate(*tiny_gguf(kind)))
    expect_error(lambda: convert(src, tmp_path / "out"), error, src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_valid_inputs_convert(kind, hf_dir, tmp_path):
    """The bases of the cases above convert, and so do text values that are not UTF-8."""
    meta, records, data = tiny_gguf(kind)
    src = tmp_path / "ok.gguf"
    src.write_bytes(gguf_bytes(meta + [("general.name", STR, b"tiny \xff\xfe")], records, data))
    out = convert(src, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 300
    assert (out / "tokenizer.json").is_file()
    assert load_model(convert(hf_dir, tmp_path / "hf-out")).args.hidden_size == 32


def test_cli_prints_one_error_line(hf_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    _, data = split_safetensors(bad / "model.safetensors")
    (bad / "model.safetensors").write_bytes(join_safetensors(b"[1, 2]", data))
    res = subprocess.run([sys.executable, "-m", "mlxspec", "convert", str(bad), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad / 'model.safetensors'}: "), res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("architectures", [{"x": 1}, True, [], None, ["LlamaForCausalLM"]])
def test_config_without_model_type(architectures, hf_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(hf_dir, src)
    config = {k: v for k, v in json.loads((src / "config.json").read_text()).items() if k != "model_type"}
    (src / "config.json").write_text(json.dumps({**config, "architectures": architectures}))
    expect_error(lambda: convert(src, tmp_path / "out"), ConfigError, src)


@pytest.mark.parametrize("state", ["a list", "a string value", "a float64 tensor"])
def test_malformed_pytorch_pickle(state, hf_dir, tmp_path):
    torch = pytest.importorskip("torch")
    src = tmp_path / "src"
    shutil.copytree(hf_dir, src, ignore=shutil.ignore_patterns("*.safetensors"))
    obj = {"a list": [torch.zeros(2)], "a string value": {NORM: "x"},
           "a float64 tensor": {NORM: torch.zeros(32, dtype=torch.float64)}}[state]
    torch.save(obj, src / "pytorch_model.bin")
    expect_error(lambda: convert(src, tmp_path / "out"), CheckpointError, src / "pytorch_model.bin")
