"""Adapters written by mlx-lm's own trainer (LoRA, DoRA, full fine-tune): a model loaded with
one gives mlx-lm's logits with the same adapter (port and mlx-lm-run models, float and
quantized weights); speculative greedy == plain greedy with a draft model, a feature draft
and prompt lookup; the calibration key tells it from its base; `convert --adapter` folds it
into weights that give the same logits (quantized: within quantization error)."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

import mlxspec
from mlxspec.engine.calibrate import fingerprint as calibration_key
from mlxspec.load import load_model
from mlxspec.models import ForeignModel, fingerprint
from adapter_training import mlx_lm_with_adapter, train_adapter
from architectures import architecture_checkpoint
from conftest import make_hf_checkpoint
from test_feature_draft import feature_draft
from test_speculative import tokens

FOLDED = 5e-4  # logits of weights with an adapter folded in vs mlx-lm's unfused layers: float rounding
TOKENS = mx.array([[1, 5, 9, 200, 31, 7, 123, 77, 2000, 15]])
PROMPT = [1, 5, 9, 200, 31, 7, 5, 9, 200, 31]


@pytest.fixture(scope="module")
def base(tmp_path_factory, hf_tokenizer_dir):
    return make_hf_checkpoint(tmp_path_factory.mktemp("adapter-base"), hf_tokenizer_dir, seed=5, architecture="llama")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, base):
    """lora on every block's every layer, dora on two projections of the last block, full on the last block."""
    root = tmp_path_factory.mktemp("adapters")
    return {"lora": train_adapter(base, root / "lora", "lora", num_layers=-1),
            "dora": train_adapter(base, root / "dora", "dora", num_layers=1, keys=["self_attn.q_proj", "mlp.down_proj"]),
            "full": train_adapter(base, root / "full", "full", num_layers=1)}


def biggest_gap(a: mx.array, b: mx.array) -> float:
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max())


def mean_gap(a: mx.array, b: mx.array) -> float:
    """For a quantized model against a float one: the largest of 32000 x T logits is the
    quantization noise's tail, the mean is what the adapter moved."""
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).mean())


@pytest.mark.parametrize("kind", ["lora", "dora", "full"])
def test_logits_equal_mlx_lms_with_the_same_adapter(base, adapters, kind):
    model, _ = mlxspec.load(base, adapter=adapters[kind])
    theirs = mlx_lm_with_adapter(base, adapters[kind])(TOKENS)
    assert biggest_gap(model(TOKENS), theirs) < FOLDED
    assert biggest_gap(load_model(base)(TOKENS), theirs) > 0.05  # the adapter does change the model


def test_quantized_target_keeps_mlx_lms_layers_and_their_logits(base, adapters, tmp_path):
    quantized = mlxspec.convert(base, tmp_path / "q8", bits=8)
    for kind in ("lora", "dora"):
        model, _ = mlxspec.load(quantized, adapter=adapters[kind])
        assert any(type(m).__name__.endswith("Linear") and "lora_a" in m for m in model.modules())
        assert biggest_gap(model(TOKENS), mlx_lm_with_adapter(quantized, adapters[kind])(TOKENS)) < 1e-3
        expanded, _ = mlxspec.load(quantized, adapter=adapters[kind], dequantize=True, dtype=mx.float32)
        theirs = mlx_lm_with_adapter(quantized, adapters[kind], dequantize=True)(TOKENS)
        assert biggest_gap(expanded(TOKENS), theirs) < FOLDED


def test_a_model_run_by_mlx_lm_takes_an_adapter(tmp_path, hf_tokenizer_dir):
    folder = architecture_checkpoint(tmp_path / "phi3", "phi3", vocab_size=32000, seed=1, tokenizer_dir=hf_tokenizer_dir)
    adapter = train_adapter(folder, tmp_path / "lora", "lora", num_layers=1, iters=3)
    model = load_model(folder)
    assert isinstance(model, ForeignModel)
    mlxspec.adapters.apply_adapter(model, adapter)
    assert biggest_gap(model(TOKENS), mlx_lm_with_adapter(folder, adapter)(TOKENS)) < FOLDED
    assert biggest_gap(load_model(folder)(TOKENS), model(TOKENS)) > 0.05
    # converted: folded in mlx-lm's module; from a quantized folder, quantized again as it was
    assert biggest_gap(load_model(mlxspec.convert(folder, tmp_path / "fused", adapter=adapter))(TOKENS),
                       model(TOKENS)) < FOLDED
    from mlxspec.convert.adapter_fusion import FusionWarning

    quantized = mlxspec.convert(folder, tmp_path / "q8", bits=8)
    with pytest.warns(FusionWarning, match="quantized again at 8 bits"):
        requantized = mlxspec.convert(quantized, tmp_path / "fused8", adapter=adapter)
    assert json.loads((requantized / "config.json").read_text())["quantization"]["bits"] == 8
    want = model(TOKENS)
    assert mean_gap(load_model(requantized)(TOKENS), want) < mean_gap(load_model(folder)(TOKENS), want) / 4


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_speculative_greedy_equals_plain_with_an_adapter(base, adapters, kind, tmp_path):
    target, _ = mlxspec.load(base, adapter=adapters[kind])
    plain_base, _ = tokens(load_model(base), PROMPT, 24)
    expected, _ = tokens(target, PROMPT, 24)
    assert expected != plain_base  # the adapter changes what the model writes
    drafts = {"base model": load_model(base), "feature": feature_draft(target, 3), "ngram": "ngram"}
    for name, draft in drafts.items():
        for k in (1, 3):
            got, _ = tokens(target, PROMPT, 24, draft=draft, num_draft_tokens=k, draft_policy="fixed")
            assert got == expected, (name, k)
    quantized, _ = mlxspec.load(mlxspec.convert(base, tmp_path / "q8", bits=8), adapter=adapters[kind])
    expected, _ = tokens(quantized, PROMPT, 16)
    got, _ = tokens(quantized, PROMPT, 16, draft=load_model(base), num_draft_tokens=3, draft_policy="fixed")
    assert got == expected


def test_the_calibration_key_tells_an_adapted_model_from_its_base(base, adapters):
    plain, adapted = load_model(base), mlxspec.load(base, adapter=adapters["lora"])[0]
    other = mlxspec.load(base, adapter=adapters["dora"])[0]
    keys = {calibration_key(m, SameDraft(), 4) for m in (plain, adapted, other)}
    assert len(keys) == 3
    assert "adapter" not in fingerprint(plain)  # keys of models without an adapter stay what they were


class SameDraft:
    """A draft standing for any one draft: the key then differs only by the target."""

    def fingerprint(self) -> dict:
        return {"draft": "same"}


@pytest.mark.parametrize("kind", ["lora", "dora", "full"])
def test_convert_folds_the_adapter_into_the_weights(base, adapters, kind, tmp_path):
    adapted, _ = mlxspec.load(base, adapter=adapters[kind])
    fused = load_model(mlxspec.convert(base, tmp_path / "fused", adapter=adapters[kind]))
    assert biggest_gap(fused(TOKENS), adapted(TOKENS)) < FOLDED
    if kind == "full":
        return
    # folded, then quantized: what quantizing the folded float checkpoint gives, near the adapted model
    fused8 = load_model(mlxspec.convert(base, tmp_path / "fused8", bits=8, adapter=adapters[kind]))
    requantized = load_model(mlxspec.convert(tmp_path / "fused", tmp_path / "requantized", bits=8))
    assert biggest_gap(fused8(TOKENS), requantized(TOKENS)) == 0
    want = adapted(TOKENS)
    assert mean_gap(fused8(TOKENS), want) < mean_gap(load_model(base)(TOKENS), want) / 4


def test_generate_with_an_adapter_writes_what_the_fused_model_writes(base, adapters, tmp_path, capsys):
    from mlxspec.arguments import run
    import mlxspec.cli as cli

    fused = mlxspec.convert(base, tmp_path / "fused", adapter=adapters["lora"])
    texts = []
    for argv in (["--model", str(base), "--adapter", str(adapters["lora"]), "--draft", "ngram"],
                 ["--model", str(fused)]):
        code = run(cli.app, ["generate", *argv, "-p", "Hello there", "--max-tokens", "12", "--temp", "0",
                             "--no-adaptive", "-k", "2"])
        out = capsys.readouterr()
        assert code == 0, out.err
        texts.append(out.out)
    assert texts[0] == texts[1] and texts[0].strip()


def test_distill_trains_a_draft_for_the_adapted_target(base, adapters, tmp_path, monkeypatch):
    """The target's answers are the adapted model's own (never the base's cached ones), the run
    records the adapter, and the draft speculates exactly for the adapted target."""
    from mlxspec.distill import distill
    from test_distill_command import PROMPTS, SMALL

    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    for name, adapter in (("base", None), ("lora", adapters["lora"])):
        distill(base, tmp_path / name, kind="model", prompts=prompts, steps=4, adapter=adapter, **{**SMALL, "head_vocab": 64})
    answers = sorted((tmp_path / "cache" / "distill-answers").iterdir())
    assert len([a for a in answers if (a / "key.json").is_file()]) == 4  # train and held-out answers, each model its own
    info = json.loads((tmp_path / "lora" / "training.json").read_text())
    assert info["options"]["adapter"] == mlxspec.adapters.read_adapter(adapters["lora"]).digest
    target, tokenizer = mlxspec.load(base, adapter=adapters["lora"], dtype=mx.float32)
    draft = mlxspec.load_draft(tmp_path / "lora", target, tokenizer, dtype=mx.float32)
    plain = [s.token for s in mlxspec.Session(target, tokenizer).stream("Tell me a story.", max_tokens=16)]
    session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=3, draft_policy="fixed")
    assert [s.token for s in session.stream("Tell me a story.", max_tokens=16)] == plain


def test_a_mixture_of_experts_takes_lora_on_its_router_and_experts(tmp_path, hf_tokenizer_dir):
    base = make_hf_checkpoint(tmp_path / "mixtral", hf_tokenizer_dir, seed=3, architecture="mixtral",
                              num_local_experts=4, num_experts_per_tok=2)
    adapter = train_adapter(base, tmp_path / "lora", "lora", num_layers=-1, iters=3)
    assert any("switch_mlp" in name for name in mlxspec.adapters.read_adapter(adapter).shapes)
    theirs = mlx_lm_with_adapter(base, adapter)(TOKENS)
    assert biggest_gap(mlxspec.load(base, adapter=adapter)[0](TOKENS), theirs) < FOLDED
    assert biggest_gap(load_model(base)(TOKENS), theirs) > 0.05
    fused = load_model(mlxspec.convert(base, tmp_path / "fused", adapter=adapter))  # expert by expert
    assert biggest_gap(fused(TOKENS), theirs) < FOLDED
    quantized = mlxspec.convert(base, tmp_path / "q8", bits=8)
    model = mlxspec.load(quantized, adapter=adapter)[0]  # mlx-lm's LoRA layers around the quantized experts
    assert biggest_gap(model(TOKENS), mlx_lm_with_adapter(quantized, adapter)(TOKENS)) < 1e-3
    expected, _ = tokens(model, PROMPT, 12)
    assert tokens(model, PROMPT, 12, draft="ngram", num_draft_tokens=3, draft_policy="fixed")[0] == expected


def test_a_quantized_gguf_source_is_expanded_folded_and_quantized_again(base, adapters, sp_model_file, tmp_path):
    from mlxspec.convert.adapter_fusion import FusionWarning
    from gguf_writer import write_gguf

    gguf = pytest.importorskip("gguf")
    source = write_gguf(base, tmp_path / "m.gguf", sp_model_file,
                        {"q_proj": gguf.GGMLQuantizationType.Q8_0, "v_proj": gguf.GGMLQuantizationType.Q4_0})
    with pytest.warns(FusionWarning, match="quantized again"):
        kept = mlxspec.convert(source, tmp_path / "kept", adapter=adapters["lora"])
    # the same as folding into the expanded file and quantizing the result at the file's bits
    dense = mlxspec.convert(mlxspec.convert(source, tmp_path / "dense", dtype="float32"), tmp_path / "fused",
                            adapter=adapters["lora"])
    name = "model.layers.1.self_attn.q_proj"
    ours, folded = mx.load(str(kept / "model.safetensors")), mx.load(str(dense / "model.safetensors"))
    weight, scales, biases = mx.quantize(folded[f"{name}.weight"], group_size=32, bits=8)
    assert mx.array_equal(ours[f"{name}.weight"], weight) and mx.array_equal(ours[f"{name}.scales"], scales)
    want = load_model(dense)(TOKENS)
    assert mean_gap(load_model(kept, dequantize=True)(TOKENS), want) < mean_gap(load_model(base)(TOKENS), want) / 4
