"""Seeded, bounded fuzzing of what `convert` reads: config.json values, safetensors headers
(and `read_weights`, the load path), GGUF headers. Whatever the mutation, the call succeeds or
raises one `MlxspecError`, writes nothing beside its input but its output folder, and allocates
no more than the input's size plus a fixed slack. The tiny valid inputs (1 layer, hidden 32,
300 tokens) and raw writers of both formats live here; test_malformed_files.py uses them too."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import tracemalloc
import traceback
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlxspec.convert.converter import convert
from mlxspec.errors import MlxspecError
from mlxspec.load import read_weights
from mlxspec.models import ModelArgs

from full_run import fewer
from synthetic import write_random_hf_checkpoint

TINY = ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=300, max_position_embeddings=128)
U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10  # GGUF value types
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_KV = [("general.architecture", STR, "llama"), ("general.alignment", U32, 32), ("llama.block_count", U32, 1),
           ("llama.context_length", U32, 128), ("llama.embedding_length", U32, 32),
           ("llama.feed_forward_length", U32, 64), ("llama.attention.head_count", U32, 4),
           ("llama.attention.head_count_kv", U32, 2), ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
           ("llama.rope.freq_base", F32, 10000.0), ("llama.vocab_size", U32, 300)]
GGUF_SHAPES = {"token_embd": (300, 32), "output_norm": (32,), "output": (300, 32), "blk.0.attn_norm": (32,),
               "blk.0.attn_q": (32, 32), "blk.0.attn_k": (16, 32), "blk.0.attn_v": (16, 32),
               "blk.0.attn_output": (32, 32), "blk.0.ffn_norm": (32,), "blk.0.ffn_gate": (64, 32),
               "blk.0.ffn_up": (64, 32), "blk.0.ffn_down": (32, 64)}


def join_safetensors(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def pack(vtype: int, value: Any) -> bytes:
    """One GGUF value: a scalar, a string (str or raw bytes) or an array given as (item type, items)."""
    if vtype == STR:
        data = value.encode() if isinstance(value, str) else value
        return struct.pack("<Q", len(data)) + data
    if vtype == ARR:
        item_type, items = value
        return struct.pack("<IQ", item_type, len(items)) + b"".join(pack(item_type, v) for v in items)
    return struct.pack(_SCALAR[vtype], value)


def gguf_bytes(kv: list[tuple], records: list[tuple], data: bytes, pad_to: int = 32) -> bytes:
    """A GGUF v3 file: `kv` [(key, type, value)], `records` [(name, type id, shape, offset)], `data`."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(records), len(kv)))
    for key, vtype, value in kv:
        out += pack(STR, key) + struct.pack("<I", vtype) + pack(vtype, value)
    for name, type_id, shape, offset in records:
        out += pack(STR, name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape)) + struct.pack("<IQ", type_id, offset)
    return bytes(out + bytes(-len(out) % pad_to) + data)


def q8_0(w: np.ndarray) -> bytes:
    """llama.cpp's Q8_0 blocks: an f16 scale, then 32 int8 weights."""
    blocks = w.reshape(-1, 32)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / 127).astype(np.float16)
    q = np.round(blocks / np.maximum(d.astype(np.float32), 1e-8)).astype(np.int8)
    return np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=1).tobytes()


def tokenizer_kv(kind: str) -> list[tuple]:
    """A 300-token vocabulary: byte-level BPE ("gpt2") or SentencePiece BPE ("llama")."""
    pairs = [a + b for a in "abcdefgh" for b in "abcde"]
    if kind == "gpt2":
        from tokenizers.pre_tokenizers import ByteLevel

        tokens, types = sorted(ByteLevel.alphabet()) + pairs + ["<s>", "</s>", "<unk>", "<pad>"], [1] * 296 + [3] * 4
        extra = [("tokenizer.ggml.merges", ARR, (STR, [f"{p[0]} {p[1]}" for p in pairs])),
                 ("tokenizer.ggml.pre", STR, "smollm")]
        ids = (296, 297, 298)
    else:
        tokens = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256)), "\u2581",
                  *"abcdefghijklmnopqrstuvwxyz", *(f"\u2581{c}" for c in "abcdefghijklmn")]
        types = [2, 3, 3] + [6] * 256 + [1] * 41
        extra, ids = [("tokenizer.ggml.scores", ARR, (F32, [-float(i) for i in range(300)]))], (1, 2, 0)
    return [("tokenizer.ggml.model", STR, kind), ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)), *extra, ("tokenizer.ggml.bos_token_id", U32, ids[0]),
            ("tokenizer.ggml.eos_token_id", U32, ids[1]), ("tokenizer.ggml.unknown_token_id", U32, ids[2])]


def tiny_gguf(kind: str = "gpt2") -> tuple[list[tuple], list[tuple], bytes]:
    """(metadata, tensor records, data) of a valid 1-layer llama GGUF file, ffn_up in Q8_0."""
    rng = np.random.default_rng(0)
    records, data = [], bytearray()
    for base, shape in GGUF_SHAPES.items():
        w = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        raw = q8_0(w) if base == "blk.0.ffn_up" else w.tobytes()
        records.append((f"{base}.weight", 8 if base == "blk.0.ffn_up" else 0, shape, len(data)))
        data += raw + bytes(-len(raw) % 32)
    return GGUF_KV + tokenizer_kv(kind), records, bytes(data)


def with_kv(kv: list[tuple], key: str, vtype: int | None = None, value: Any = None) -> list[tuple]:
    """`kv` with `key` dropped, or set to (vtype, value)."""
    out = [e for e in kv if e[0] != key]
    return out if vtype is None else out + [(key, vtype, value)]


# Allocations are measured with tracemalloc (Python's, and numpy's buffers, counted when asked
# for, not when their pages are touched) and MLX's own peak counter: both exact on the CPU
# backend, unlike max RSS, a lifetime high-water mark blind to a huge buffer never written.
# The slack covers what any call allocates (imports, MLX's graph, the output's small files).
SLACK = 64 * 2**20
FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def listing(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def check(src: Path, run: Callable[[], Any]) -> None:
    """`run()` succeeds or raises an MlxspecError, leaves the folder around `src` as it was
    (but for an `out` folder) and allocates at most src's size plus SLACK."""
    size = sum(p.stat().st_size for p in [src, *src.rglob("*")] if p.is_file())
    before, mlx_before = listing(src.parent), mx.get_active_memory()
    mx.reset_peak_memory()
    tracemalloc.start()
    try:
        run()
        event("succeeded")
    except MlxspecError as exc:
        event(f"{type(exc).__name__}: {str(exc).split(': ', 1)[-1][:40]}")
    except Exception as exc:  # anything else is a bug
        pytest.fail(f"{type(exc).__name__} escaped: {exc}\n{traceback.format_exc()}")
    finally:
        python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert python_peak <= size + SLACK, f"Python/numpy allocated {python_peak} bytes for a {size}-byte input"
    assert mx.get_peak_memory() - mlx_before <= size + SLACK, f"MLX allocated {mx.get_peak_memory()} bytes"
    shutil.rmtree(src.parent / "out", ignore_errors=True)
    assert listing(src.parent) == before


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory) -> Path:
    return write_random_hf_checkpoint(tmp_path_factory.mktemp("fuzz") / "hf", TINY)


def fuzz_hf(base: Path, tmp_path: Path, edit: Callable[[Path], None], also_load: bool = False) -> None:
    """Copy `base`, `edit` the copy, then check convert (and read_weights) on it."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        src = Path(work) / "src"
        shutil.copytree(base, src)
        edit(src)
        check(src, lambda: convert(src, Path(work) / "out"))
        if also_load:
            check(src, lambda: mx.eval(list(read_weights([src / "model.safetensors"], False).values())))


DELETE = "<delete>"
HUGE = [2**31, 2**32, 2**63, 2**64 - 1]
INTS = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, 2**64, 10**30]))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.text(max_size=6), INTS, st.floats()),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                        ["type", "rope_type", "factor", "bits", "group_size", "rope_theta"]), inner, max_size=3),
                    max_leaves=5)
BYTE_EDITS = st.lists(st.tuples(st.integers(0, 2**20), st.one_of(  # (position, new bytes): a byte or a u64
    st.binary(min_size=1, max_size=1), st.sampled_from(b'09[]{}",:-.e ').map(lambda b: bytes([b])),
    st.sampled_from([0, 1, 301, 2**31, 2**40, 2**64 - 1]).map(lambda v: v.to_bytes(8, "little")))),
    min_size=1, max_size=6)


def overwrite(raw: bytes, edits: list[tuple[int, bytes]], end: int) -> bytes:
    """`raw` with each edit written at its position wrapped into raw[:end] (the header)."""
    out = bytearray(raw)
    for pos, new in edits:
        at = pos % (end - len(new) + 1)
        out[at:at + len(new)] = new
    return bytes(out)


CONFIG_KEYS = st.sampled_from([
    "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_traditional", "max_position_embeddings",
    "tie_word_embeddings", "model_type", "sliding_window", "rope_scaling", "rope_parameters", "quantization",
    "head_vocab_size", "architectures"])


@settings(FUZZ, max_examples=fewer(400, 4))
@given(changes=st.lists(st.tuples(CONFIG_KEYS, JSON | st.just(DELETE)), min_size=1, max_size=3))
def test_config_values(changes, hf_base, tmp_path):
    def edit(src: Path) -> None:
        config = json.loads((src / "config.json").read_text())
        for key, value in changes:
            if value == DELETE:
                config.pop(key, None)
            else:
                config[key] = value
        (src / "config.json").write_text(json.dumps(config, allow_nan=True))
    fuzz_hf(hf_base, tmp_path, edit)


ENTRY_EDITS = st.lists(st.tuples(
    st.sampled_from(["model.norm.weight", "model.embed_tokens.weight", "lm_head.weight", "__metadata__", "x"]),
    st.sampled_from(["dtype", "shape", "data_offsets", "whole"]),
    st.one_of(JSON, st.lists(INTS, max_size=5), st.sampled_from(["F32", "F16", "BF16", "F64", "U8", "BOOL"]))),
    min_size=1, max_size=3)


def mutate_safetensors(raw: bytes, mutation: tuple) -> bytes:
    kind, edits = mutation
    (n,) = struct.unpack("<Q", raw[:8])
    if kind == "bytes":  # in the length field or the JSON text, not in its padding
        return overwrite(raw, edits, 8 + len(raw[8:8 + n].rstrip()))
    header = json.loads(raw[8:8 + n])
    for name, field, value in edits:
        if field == "whole" or not isinstance(header.get(name), dict):
            header[name] = value
        else:
            header[name][field] = value
    return join_safetensors(json.dumps(header, allow_nan=True).encode(), raw[8 + n:])


@settings(FUZZ, max_examples=fewer(500, 4))
@given(mutation=st.tuples(st.just("entries"), ENTRY_EDITS) | st.tuples(st.just("bytes"), BYTE_EDITS))
def test_safetensors_headers(mutation, hf_base, tmp_path):
    def edit(src: Path) -> None:
        weights = src / "model.safetensors"
        weights.write_bytes(mutate_safetensors(weights.read_bytes(), mutation))
    fuzz_hf(hf_base, tmp_path, edit, also_load=True)


GGUF_KEYS = st.sampled_from([k for k, _, _ in GGUF_KV] + [
    "llama.attention.key_length", "llama.vocab_size", "llama.attention.sliding_window", "llama.expert_count",
    "llama.rope.scaling.type", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"])
GGUF_VALUES = st.one_of(  # (value type, value), or None to drop the key
    st.tuples(st.sampled_from([0, 2, 4, 10]), st.integers(0, 255)),  # integers of every width
    st.tuples(st.sampled_from([1, 3, 5, 11]), st.integers(-128, 127)),
    st.tuples(st.sampled_from([U32, U64]), st.sampled_from([3, 7, 48, 64, 2**31, 2**32 - 1])),
    st.tuples(st.sampled_from([6, 12]), st.floats(width=32)), st.tuples(st.just(BOOL), st.booleans()),
    st.tuples(st.just(STR), st.text(max_size=8) | st.binary(max_size=8)),  # binary: not always UTF-8
    st.tuples(st.just(ARR), st.tuples(st.just(STR), st.lists(st.text("ab \u2581", max_size=3), max_size=4))),
    st.tuples(st.just(ARR), st.tuples(st.sampled_from([I32, F32, U64]), st.lists(st.integers(0, 400), max_size=4))),
    st.tuples(st.just(ARR), st.just((ARR, [(U32, [1])]))), st.none())
GGUF_MUTATIONS = st.one_of(
    st.tuples(st.just("kv"), st.lists(st.tuples(GGUF_KEYS, GGUF_VALUES), min_size=1, max_size=3)),
    st.tuples(st.just("tokens"), st.tuples(  # a tokenizer array one item short or long, mistyped, repeating
        st.sampled_from(["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"]),
        st.integers(298, 302), st.sampled_from([STR, I32, F32]), st.booleans())),
    st.tuples(st.just("record"), st.tuples(st.integers(0, 11), st.sampled_from([1, 2, 3]),  # type, shape, offset
                                           st.lists(st.integers(0, 400) | st.sampled_from(HUGE), max_size=5))),
    st.tuples(st.just("bytes"), BYTE_EDITS))


def mutate_gguf(kv: list, records: list, data: bytes, mutation: tuple) -> bytes:
    kind, arg = mutation
    if kind == "kv":
        for key, typed in arg:
            kv = with_kv(kv, key, *(typed or (None, None)))
    elif kind == "tokens":
        key, n, item_type, repeat = arg
        items = [f"t{i}" if item_type == STR else i % 7 for i in range(n)]
        kv = with_kv(kv, key, ARR, (item_type, items[:1] * 2 + items[2:] if repeat else items))
    elif kind == "record":
        index, field, values = arg
        new = list(records[index])
        new[field] = tuple(values) if field == 2 else (values or [1])[0] % (2**32 if field == 1 else 2**64)
        records = [*records[:index], tuple(new), *records[index + 1:]]
    raw = gguf_bytes(kv, records, data)
    return overwrite(raw, arg, len(raw) - len(data)) if kind == "bytes" else raw


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # bytes that were never weights decode to inf/NaN
@settings(FUZZ, max_examples=fewer(1000, 4))
@given(kind=st.sampled_from(["gpt2", "llama"]), mutation=GGUF_MUTATIONS)
def test_gguf_headers(kind, mutation, tmp_path):
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        src = Path(work) / "m.gguf"
        src.write_bytes(mutate_gguf(*tiny_gguf(kind), mutation))
        check(src, lambda: convert(src, Path(work) / "out"))
