"""Mixtral (sparse mixture of experts) against the oracle, transformers' MixtralForCausalLM in
fp32: HF and Mistral layouts, converted and loaded as they are, quantized experts, mlx-lm
reading what `mlxspec convert` wrote, and speculative decoding with a Mixtral target."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from conftest import TINY, make_hf_checkpoint, reinit_
from mlxspec import stream_generate
from mlxspec.convert.converter import convert
from mlxspec.errors import CheckpointError, ConfigError
from mlxspec.load import load_model
from mlxspec.models import Model, ModelArgs
from mlxspec.models.moe import SparseMoE

EXPERTS, USED = 4, 2


def make_mixtral_checkpoint(out: Path, tokenizer_dir: Path | None, seed: int = 0, **overrides) -> Path:
    """A random MixtralForCausalLM saved by transformers in HF layout (per-expert w1/w2/w3)."""
    return make_hf_checkpoint(out, tokenizer_dir, seed, architecture="mixtral", num_local_experts=EXPERTS,
                              num_experts_per_tok=USED, **overrides)


def transformers_logits(folder: Path, tokens: np.ndarray) -> np.ndarray:
    import torch
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


def chunked_logits(model: Model, tokens: np.ndarray, cuts: tuple[int, ...]) -> np.ndarray:
    """Logits of `tokens` fed in pieces through one cache (prefill in chunks, then steps)."""
    cache = model.make_cache()
    edges = [0, *cuts, tokens.shape[1]]
    return np.concatenate([np.array(model(mx.array(tokens[:, a:b]), cache)) for a, b in zip(edges, edges[1:])], 1)


@pytest.fixture(scope="module", params=[None, 6], ids=["full", "window6"])
def mixtral_dir(request, tmp_path_factory, hf_tokenizer_dir) -> Path:
    return make_mixtral_checkpoint(tmp_path_factory.mktemp("mixtral"), hf_tokenizer_dir, seed=3,
                                   sliding_window=request.param)


TOKENS = np.random.default_rng(0).integers(0, 32000, (2, 21))


def test_logits_equal_transformers(mixtral_dir, tmp_path):
    expected = transformers_logits(mixtral_dir, TOKENS)
    model = load_model(mixtral_dir, dtype=mx.float32)
    assert model.args.model_type == "mixtral"
    np.testing.assert_allclose(np.array(model(mx.array(TOKENS))), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(chunked_logits(model, TOKENS, (8, 13, 14, 15)), expected, atol=1e-4, rtol=0)
    converted = load_model(convert(mixtral_dir, tmp_path / "out"), dtype=mx.float32)
    np.testing.assert_allclose(chunked_logits(converted, TOKENS, (5, 6)), expected, atol=1e-4, rtol=0)


def test_expert_paths_agree():
    """Tokens sorted by expert (several at once) == each token alone (no sort), and both ==
    the explicit sum over the chosen experts."""
    mx.random.seed(1)
    args = ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4,
                     vocab_size=50, model_type="mixtral", num_local_experts=6, num_experts_per_tok=3)
    moe = SparseMoE(args)
    x = mx.random.normal((2, 9, 32))
    together = moe(x)
    alone = mx.concatenate([moe(x[:, i : i + 1]) for i in range(9)], axis=1)
    chosen, weights = moe.route(x)
    mlp = moe.switch_mlp
    explicit = mx.zeros_like(x)
    for slot in range(3):
        w = [m.weight[chosen[..., slot]] for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
        h = (x[..., None, :] @ w[0].swapaxes(-1, -2)).squeeze(-2)
        u = (x[..., None, :] @ w[1].swapaxes(-1, -2)).squeeze(-2)
        y = ((h * mx.sigmoid(h) * u)[..., None, :] @ w[2].swapaxes(-1, -2)).squeeze(-2)
        explicit = explicit + weights[..., slot : slot + 1] * y
    np.testing.assert_allclose(np.array(together), np.array(alone), atol=1e-5)
    np.testing.assert_allclose(np.array(together), np.array(explicit), atol=1e-5)


def write_consolidated(hf_dir: Path, out: Path) -> Path:
    """The Mixtral in Mistral's own layout: params.json with a `moe` block, Mistral names,
    per-expert `feed_forward.experts.E.wN`, q/k rows interleaved."""
    from mlxspec.layout import permute_half_to_interleaved

    config = json.loads((hf_dir / "config.json").read_text())
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    renames = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
               "self_attn.o_proj": "attention.wo", "input_layernorm": "attention_norm",
               "post_attention_layernorm": "ffn_norm", "block_sparse_moe.gate": "feed_forward.gate",
               "block_sparse_moe.experts": "feed_forward.experts"}
    top = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
    out.mkdir()
    weights = {}
    for name, tensor in mx.load(str(hf_dir / "model.safetensors")).items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = mx.array(permute_half_to_interleaved(np.array(tensor), heads[name.split(".")[-2]]))
        new = top.get(name, name.replace("model.", "", 1))
        for old, mistral in renames.items():
            new = new.replace(old, mistral)
        weights[new] = tensor
    mx.save_safetensors(str(out / "consolidated.safetensors"), weights)
    params = {"dim": config["hidden_size"], "n_layers": config["num_hidden_layers"],
              "hidden_dim": config["intermediate_size"], "n_heads": config["num_attention_heads"],
              "n_kv_heads": config["num_key_value_heads"], "head_dim": config["hidden_size"] // config["num_attention_heads"],
              "norm_eps": config["rms_norm_eps"], "vocab_size": config["vocab_size"], "rope_theta": config["rope_theta"],
              "moe": {"num_experts": EXPERTS, "num_experts_per_tok": USED}}
    if config.get("sliding_window"):
        params["sliding_window"] = config["sliding_window"]
    (out / "params.json").write_text(json.dumps(params))
    return out


def test_consolidated_layout_matches_hf(mixtral_dir, tmp_path):
    consolidated = write_consolidated(mixtral_dir, tmp_path / "consolidated")
    assert not any("experts" in n and "switch" in n for n in mx.load(str(consolidated / "consolidated.safetensors")))
    expected = np.array(load_model(mixtral_dir, dtype=mx.float32)(mx.array(TOKENS)))
    direct = load_model(consolidated, dtype=mx.float32)
    assert direct.args.model_type == "mixtral" and direct.args.num_local_experts == EXPERTS
    np.testing.assert_allclose(np.array(direct(mx.array(TOKENS))), expected, atol=1e-5)
    converted = load_model(convert(consolidated, tmp_path / "out"), dtype=mx.float32)
    np.testing.assert_allclose(np.array(converted(mx.array(TOKENS))), expected, atol=1e-5)


def test_quantized_experts_convert_and_mlx_lm_reads_them(mixtral_dir, tmp_path):
    """4-bit experts converted expert by expert: the model == its own dequantized weights,
    close to full precision, and mlx-lm loads the folder and computes the same logits."""
    out = convert(mixtral_dir, tmp_path / "q4", bits=4, group_size=32)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mixtral" and config["quantization"]["bits"] == 4
    quantized = load_model(out)
    stacked = quantized.layers[0].block_sparse_moe.switch_mlp.gate_proj
    assert stacked.weight.shape[0] == EXPERTS and stacked.bits == 4
    logits = np.array(quantized(mx.array(TOKENS)), dtype=np.float32)
    dequantized = np.array(load_model(out, dtype=mx.float32, dequantize=True)(mx.array(TOKENS)))
    np.testing.assert_allclose(logits, dequantized, atol=2e-2)
    full = np.array(load_model(mixtral_dir, dtype=mx.float32)(mx.array(TOKENS)))
    assert np.corrcoef(dequantized.ravel(), full.ravel())[0, 1] > 0.95  # 4 bits: close, not equal
    from mlx_lm.utils import load_model as mlx_lm_load

    reference, _ = mlx_lm_load(out)
    # mlx-lm's Mixtral has no sliding window: compare the positions a window does not reach
    seen = quantized.args.sliding_window or TOKENS.shape[1]
    np.testing.assert_allclose(np.array(reference(mx.array(TOKENS)), dtype=np.float32)[:, :seen], logits[:, :seen],
                               atol=2e-2)


def test_greedy_speculative_with_a_mixtral_target_equals_plain(mixtral_dir, tmp_path):
    target = load_model(mixtral_dir, dtype=mx.float32)
    dense = load_model(make_hf_checkpoint(tmp_path / "draft", None, seed=9,
                                          sliding_window=target.args.sliding_window), dtype=mx.float32)
    moe_draft = load_model(mixtral_dir, dtype=mx.float32)
    moe_draft.model.layers = moe_draft.model.layers[:1]  # the target without its last layer
    prompt = [int(t) for t in TOKENS[0, :9]]
    plain = [s.token for s in stream_generate(target, None, prompt, max_tokens=40)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for draft in (dense, moe_draft):
            for k in (1, 3, 5):
                steps = list(stream_generate(target, None, prompt, max_tokens=40, draft=draft, num_draft_tokens=k,
                                             draft_policy="fixed"))
                assert [s.token for s in steps] == plain, k
                assert steps[-1].stats.drafted > 0
    # the MoE draft is the target's first layer: it agrees often (the verification really runs)
    assert steps[-1].stats.accepted > 0


def test_bad_mixtral_configs_and_checkpoints(mixtral_dir, tmp_path):
    config = json.loads((mixtral_dir / "config.json").read_text())
    for key, value in (("num_experts_per_tok", EXPERTS + 1), ("num_local_experts", 0), ("num_experts_per_tok", 1.5)):
        with pytest.raises(ConfigError, match=key):
            ModelArgs.from_hf_config({**config, key: value})
    with pytest.raises(ConfigError, match="mixture of experts"):
        ModelArgs(hidden_size=8, num_hidden_layers=1, intermediate_size=8, num_attention_heads=2, vocab_size=8,
                  num_local_experts=4, num_experts_per_tok=2)
    broken = tmp_path / "broken"
    shutil.copytree(mixtral_dir, broken)
    weights = mx.load(str(broken / "model.safetensors"))
    del weights["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    mx.save_safetensors(str(broken / "model.safetensors"), weights)
    for action in (lambda: load_model(broken), lambda: convert(broken, tmp_path / "out")):
        with pytest.raises(CheckpointError, match="lacks expert 2"):
            action()


def test_mixtral_gguf_with_stacked_experts(mixtral_dir, sp_model_file, tmp_path):
    """llama.cpp's Mixtral layout (`llama` + expert_count, experts stacked in ffn_*_exps,
    the router in ffn_gate_inp): F32 gives the original logits; Q8_0 experts stay quantized
    (stacked), equal their own dequantized form and stay close to full precision."""
    from gguf_writer import write_gguf
    from test_gguf import Q

    if json.loads((mixtral_dir / "config.json").read_text())["sliding_window"]:
        pytest.skip("llama.cpp's llama architecture has no sliding window")
    expected = np.array(load_model(mixtral_dir, dtype=mx.float32)(mx.array(TOKENS)))
    f32 = load_model(convert(write_gguf(mixtral_dir, tmp_path / "f32.gguf", sp_model_file), tmp_path / "a"),
                     dtype=mx.float32)
    assert f32.args.model_type == "mixtral" and f32.args.num_experts_per_tok == USED
    np.testing.assert_allclose(np.array(f32(mx.array(TOKENS))), expected, atol=1e-4)
    types = {"gate_proj": Q.Q8_0, "up_proj": Q.Q8_0, "down_proj": Q.Q8_0}
    out = convert(write_gguf(mixtral_dir, tmp_path / "q8.gguf", sp_model_file, types), tmp_path / "b")
    quantized = load_model(out, dtype=mx.float32)
    experts = quantized.layers[1].block_sparse_moe.switch_mlp.down_proj
    assert experts.bits == 8 and experts.weight.shape[0] == EXPERTS
    logits = np.array(quantized(mx.array(TOKENS)))
    np.testing.assert_allclose(logits, np.array(load_model(out, dtype=mx.float32, dequantize=True)(mx.array(TOKENS))),
                               atol=1e-4)
    np.testing.assert_allclose(logits, expected, atol=0.1)


@pytest.mark.parametrize("experts, used", [(3, 1), (3, 3), (5, 4)])
def test_other_expert_counts_equal_transformers(experts, used, tmp_path, hf_tokenizer_dir):
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(experts * 10 + used)
    config = MixtralConfig(**{**TINY, "num_hidden_layers": 1}, num_local_experts=experts, num_experts_per_tok=used,
                           tie_word_embeddings=False, attn_implementation="eager", sliding_window=None)
    model = MixtralForCausalLM(config).eval()
    reinit_(model, experts)
    model.save_pretrained(str(tmp_path))
    with torch.no_grad():
        expected = model(torch.tensor(TOKENS)).logits.numpy()
    ours = load_model(tmp_path, dtype=mx.float32)
    np.testing.assert_allclose(chunked_logits(ours, TOKENS, (4, 5)), expected, atol=1e-4, rtol=0)
