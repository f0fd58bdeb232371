"""K-quant GGUF input: Q4_K and Q5_K map onto MLX's affine form bit for bit, Q6_K decodes
exactly and its re-quantization stays under the stated (and reported) bound, and a Q4_K_M
style mix converts to the weights and logits of the `gguf` package's own dequantization."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxspec.convert import gguf as gguf_format
from mlxspec.convert.converter import RequantizationWarning, convert
from mlxspec.convert.kquants import REQUANTIZATION_BOUND, requantize
from mlxspec.errors import CheckpointError
from mlxspec.load import load_model, read_weights

from test_fuzz import ARR, gguf_bytes, tiny_gguf, tokenizer_kv

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
TOKENS = mx.array([[1, 17, 42, 250, 7, 99, 3, 180, 64, 5]])

# (bytes per super-block, offset and typical size of each f16 factor) of the K-quants.
_K_LAYOUT = {Q.Q4_K: (144, {0: 1e-4, 2: 1e-3}), Q.Q5_K: (176, {0: 5e-5, 2: 1e-3}), Q.Q6_K: (210, {208: 2e-5})}

# A 2-layer llama, hidden size 256 (rows are whole super-blocks), 300-token vocabulary.
LAYERS = 2
_LAYER_SHAPES = {"attn_norm": (256,), "attn_q": (256, 256), "attn_k": (128, 256), "attn_v": (128, 256),
                 "attn_output": (256, 256), "ffn_norm": (256,), "ffn_gate": (512, 256), "ffn_up": (512, 256),
                 "ffn_down": (256, 512)}
SHAPES = {"token_embd": (300, 256), "output_norm": (256,), "output": (300, 256),
          **{f"blk.{i}.{name}": shape for i in range(LAYERS) for name, shape in _LAYER_SHAPES.items()}}
# Q4_K_M-like: Q4_K attention and embeddings, Q5_K mlp, Q6_K output and one ffn_down, Q8_0 attn_v.
MIX = {"token_embd": Q.Q4_K, "attn_q": Q.Q4_K, "attn_k": Q.Q4_K, "attn_output": Q.Q4_K, "attn_v": Q.Q8_0,
       "ffn_gate": Q.Q5_K, "ffn_up": Q.Q5_K, "ffn_down": Q.Q5_K, "blk.0.ffn_down": Q.Q6_K, "output": Q.Q6_K}


def k_blocks(qtype: int, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid K-quant blocks [rows, cols/256 · block bytes]: random bytes for the
    quants and 6/8-bit scales, positive f16 super-block factors of a sensible size."""
    size, factors = _K_LAYOUT[qtype]
    blocks = rng.integers(0, 256, (rows, cols // 256, size), dtype=np.uint8)
    for offset, scale in factors.items():
        d = (scale * rng.uniform(0.5, 1.5, (rows, cols // 256, 1))).astype(np.float16)
        blocks[..., offset:offset + 2] = d.view(np.uint8)
    return blocks.reshape(rows, -1)


def raw_blocks(qtype: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A tensor of `shape` in `qtype`: raw blocks (K-quants, Q8_0) or float32 (F32)."""
    if qtype in _K_LAYOUT:
        return k_blocks(qtype, int(np.prod(shape[:-1])), shape[-1], rng).reshape(*shape[:-1], -1)
    if len(shape) == 1:
        return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)  # norms near 1
    w = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return w if qtype == Q.F32 else gguf.quants.quantize(w, qtype)


def oracle(raw: np.ndarray, qtype: int, shape: tuple[int, ...]) -> np.ndarray:
    return raw if qtype == Q.F32 else gguf.quants.dequantize(raw, qtype).reshape(shape)


def write(path: Path, tensors: dict[str, tuple[int, np.ndarray]], metadata: bool = True, experts: int = 0) -> Path:
    """A GGUF file (llama metadata and a 300-token vocabulary when `metadata`; a Mixtral with
    `experts`, two of them used) holding `tensors` {name: (type, raw blocks or float32 array)}."""
    writer = gguf.GGUFWriter(str(path), "llama")
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(2)
    if metadata:
        writer.add_block_count(LAYERS)
        writer.add_context_length(128)
        writer.add_embedding_length(256)
        writer.add_feed_forward_length(512)
        writer.add_head_count(4)
        writer.add_head_count_kv(2)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_freq_base(10000.0)
        for key, vtype, value in tokenizer_kv("gpt2"):
            if vtype == ARR:
                writer.add_key_value(key, value[1], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType(value[0]))
            else:
                writer.add_key_value(key, value, gguf.GGUFValueType(vtype))
    for name, (qtype, data) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=None if qtype == Q.F32 else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_k_quant_tensors_equal_the_gguf_dequantization(tmp_path):
    """Q4_K, Q5_K (and Q8_0) as stored give llama.cpp's values bit for bit; Q6_K decodes
    exactly and its 8-bit re-quantization stays under the bound, several times closer than 6 bits."""
    rng = np.random.default_rng(0)
    types = {"q4k": Q.Q4_K, "q5k": Q.Q5_K, "q6k": Q.Q6_K, "q80": Q.Q8_0}
    raw = {name: raw_blocks(qtype, (64, 512), rng) for name, qtype in types.items()}
    header = gguf_format.read_header(write(tmp_path / "t.gguf", {n: (types[n], raw[n]) for n in types}, False))
    for tensor in header.tensors:
        theirs = oracle(raw[tensor.name], types[tensor.name], (64, 512))
        data = gguf_format.read_tensor(header, tensor)
        if tensor.name == "q6k":
            assert data.dtype == np.float32 and np.array_equal(data, theirs)
            continue
        bits = gguf_format.QUANT_BITS[tensor.type_name]
        w, s, b = (mx.array(x) for x in data)
        assert s.dtype == (mx.float16 if tensor.name == "q80" else mx.float32)
        ours = np.array(mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=32, bits=bits))
        assert np.array_equal(ours, theirs), tensor.name
    values = mx.array(oracle(raw["q6k"], Q.Q6_K, (64, 512)))
    (w, s, b), error = requantize(values, 8, 32)
    back = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=32, bits=8)
    measured = (mx.abs(back - values).max() / mx.abs(values).max()).item()
    assert error.item() == pytest.approx(measured, rel=1e-6) and measured < REQUANTIZATION_BOUND
    six = mx.dequantize(*mx.quantize(values, group_size=32, bits=6), group_size=32, bits=6)
    assert mx.abs(six - values).max().item() > 3 * mx.abs(back - values).max().item()


def mix_type(name: str) -> int:
    return MIX.get(name, MIX.get(name.split(".")[-1], Q.F32))


@pytest.fixture(scope="module")
def k_model(tmp_path_factory) -> tuple[Path, Path]:
    """(the K-quant mix, the same blocks dequantized by the gguf package as an F32 file)."""
    folder = tmp_path_factory.mktemp("kq")
    rng = np.random.default_rng(1)
    raw = {name: (mix_type(name), raw_blocks(mix_type(name), shape, rng)) for name, shape in SHAPES.items()}
    floats = {name: (Q.F32, oracle(data, qtype, SHAPES[name])) for name, (qtype, data) in raw.items()}
    return (write(folder / "kq.gguf", {f"{n}.weight": v for n, v in raw.items()}),
            write(folder / "f32.gguf", {f"{n}.weight": v for n, v in floats.items()}))


def test_expanded_k_quant_model_gives_the_oracle_logits(k_model, tmp_path):
    kq, f32 = k_model
    reference = load_model(convert(f32, tmp_path / "ref"))(TOKENS)
    expanded = load_model(convert(kq, tmp_path / "f32", dtype="float32"))(TOKENS)
    assert mx.abs(expanded - reference).max().item() < 1e-4
    half = load_model(convert(kq, tmp_path / "f16", dtype="float16"), dtype=mx.float32)(TOKENS)
    assert mx.abs(half - reference).max().item() < 2e-2
    requantized = convert(kq, tmp_path / "b8", bits=8, group_size=32)
    assert json.loads((requantized / "config.json").read_text())["quantization"]["bits"] == 8
    assert mx.abs(load_model(requantized)(TOKENS) - reference).max().item() < 5e-2


def test_kept_k_quant_model_equals_the_oracle_weights(k_model, tmp_path):
    """Kept as stored: Q4_K/Q5_K/Q8_0 weights equal the oracle's bit for bit, Q6_K within the
    bound; per-layer (bits, group) in config.json; one warning reporting the measured error."""
    kq, f32 = k_model
    reference = convert(f32, tmp_path / "ref")
    with pytest.warns(RequantizationWarning) as caught:
        kept = convert(kq, tmp_path / "kept")
    assert len(caught) == 1
    quant = json.loads((kept / "config.json").read_text())["quantization"]
    assert (quant["bits"], quant["group_size"]) == (4, 32)
    assert quant["lm_head"] == quant["model.layers.0.mlp.down_proj"] == {"group_size": 32, "bits": 8}
    assert quant["model.layers.1.mlp.down_proj"] == quant["model.layers.0.mlp.up_proj"] == {"group_size": 32, "bits": 5}
    assert quant["model.layers.1.self_attn.v_proj"] == {"group_size": 32, "bits": 8}
    ours = dict(tree_flatten(load_model(kept, dequantize=True).parameters()))
    errors = []
    for name, value in read_weights(sorted(reference.glob("*.safetensors")), False).items():
        if name in ("lm_head.weight", "model.layers.0.mlp.down_proj.weight"):  # Q6_K
            errors.append((mx.abs(ours[name] - value).max() / mx.abs(value).max()).item())
        else:
            assert np.array_equal(np.array(ours[name]), np.array(value)), name
    reported = re.search(r"worst error ([\d.]+)% of a tensor's largest weight", str(caught[0].message))
    assert float(reported.group(1)) == pytest.approx(100 * max(errors), abs=0.006)
    assert max(errors) < REQUANTIZATION_BOUND
    logits = load_model(kept)(TOKENS)  # f32 scales as stored: computed in float32
    assert logits.dtype == mx.float32
    assert mx.abs(logits - load_model(kept, dequantize=True)(TOKENS)).max().item() < 1e-4
    reference_logits = load_model(reference)(TOKENS)
    assert mx.abs(logits - reference_logits).max().item() < 0.05 * mx.abs(reference_logits).max().item()
    half = load_model(kept, dtype=mx.float16)(TOKENS)
    assert mx.abs(half.astype(mx.float32) - logits).max().item() < 5e-2


def test_cli_converts_a_k_quant_gguf_that_mlx_lm_reads(k_model, tmp_path):
    kq, _ = k_model
    res = subprocess.run([sys.executable, "-m", "mlxspec", "convert", str(kq), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "2 Q6_K tensors re-quantized to 8 bits" in warnings[0], res.stderr
    import mlx_lm

    theirs, _ = mlx_lm.load(str(tmp_path / "out"))
    ours = load_model(tmp_path / "out")(TOKENS)
    assert mx.abs(theirs(TOKENS).astype(mx.float32) - ours).max().item() < 1e-4


def test_k_quant_rows_must_be_whole_super_blocks_and_other_k_quants_are_refused(tmp_path):
    meta, records, data = tiny_gguf()
    for type_id, needle in ((12, r"'blk.0.ffn_up.weight' has rows of 32 weights, not whole Q4_K blocks of 256"),
                            (10, r"'blk.0.ffn_up.weight' is Q2_K, which mlxspec cannot convert \(supported: .*Q6_K")):
        bad = [(n, type_id if n == "blk.0.ffn_up.weight" else t, s, o) for n, t, s, o in records]
        (tmp_path / "bad.gguf").write_bytes(gguf_bytes(meta, bad, data))
        with pytest.raises(CheckpointError, match=needle):
            convert(tmp_path / "bad.gguf", tmp_path / "out")


def test_a_k_quant_mixtral_gives_the_oracle_logits(tmp_path):
    """Stacked experts in K-quants (Q4_K gate, Q5_K up, Q6_K down) as llama.cpp writes a
    Mixtral: expanded, the logits of the gguf package's dequantization; kept, its own."""
    rng = np.random.default_rng(2)
    experts = 4
    shapes = {n: s for n, s in SHAPES.items() if not n.split(".")[-1].startswith("ffn_") or n.endswith("ffn_norm")}
    moe = {"ffn_gate_inp": ((experts, 256), Q.F32), "ffn_gate_exps": ((experts, 512, 256), Q.Q4_K),
           "ffn_up_exps": ((experts, 512, 256), Q.Q5_K), "ffn_down_exps": ((experts, 256, 512), Q.Q6_K)}
    raw, floats = {}, {}
    for name, shape in [*shapes.items(), *((f"blk.{i}.{n}", s) for i in range(LAYERS) for n, (s, _) in moe.items())]:
        qtype = moe[name.split(".")[-1]][1] if name.split(".")[-1] in moe else mix_type(name)
        raw[f"{name}.weight"] = (qtype, raw_blocks(qtype, shape, rng))
        floats[f"{name}.weight"] = (Q.F32, oracle(raw[f"{name}.weight"][1], qtype, shape))
    kq = write(tmp_path / "kq.gguf", raw, experts=experts)
    reference = load_model(convert(write(tmp_path / "f32.gguf", floats, experts=experts), tmp_path / "ref"))
    assert reference.args.model_type == "mixtral" and reference.args.num_local_experts == experts
    expanded = load_model(convert(kq, tmp_path / "f32", dtype="float32"))
    assert mx.abs(expanded(TOKENS) - reference(TOKENS)).max().item() < 1e-4
    with pytest.warns(RequantizationWarning):
        kept = load_model(convert(kq, tmp_path / "kept"))
    down = kept.layers[0].block_sparse_moe.switch_mlp.down_proj
    assert (down.bits, down.weight.shape[0]) == (8, experts)
    assert mx.abs(kept(TOKENS) - load_model(tmp_path / "kept", dequantize=True)(TOKENS)).max().item() < 1e-4
