"""The MLX port against the oracle: transformers' MistralForCausalLM, fp32."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.models.config import ModelArgs
from mlxspec.layout import permute_half_to_interleaved
from mlxspec.models import Linear, Model

SEQ = 100


def torch_logits(model_dir, tokens: np.ndarray) -> np.ndarray:
    import torch
    from transformers import MistralForCausalLM

    model = MistralForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("fixture", ["hf_window_dir", "hf_full_dir"])
def test_logits_equal_transformers(request, fixture):
    model_dir = request.getfixturevalue(fixture)
    tokens = np.random.default_rng(0).integers(0, 32000, size=(1, SEQ))
    model, _ = mlxspec.load(model_dir)
    ours = np.array(model(mx.array(tokens)))
    ref = torch_logits(model_dir, tokens)
    assert ours.shape == ref.shape == (1, SEQ, 32000)
    assert np.abs(ours - ref).max() <= 1e-4
    # and through the cache, token by token, past several windows
    cache = model.make_cache()
    steps = [np.array(model(mx.array(tokens[:, i : i + 1]), cache)) for i in range(SEQ)]
    assert np.abs(np.concatenate(steps, axis=1) - ref).max() <= 1e-4


def test_sliding_window_changes_logits(hf_window_dir):
    """Proof the oracle test can fail: ignoring the window (as mlx-lm does) gives other logits."""
    model, _ = mlxspec.load(hf_window_dir)
    tokens = mx.array(np.random.default_rng(0).integers(0, 32000, size=(1, SEQ)))
    windowed = model(tokens)
    model.model.sliding_window = None
    full = model(tokens)
    assert mx.abs(windowed[:, :16] - full[:, :16]).max().item() < 1e-5
    assert mx.abs(windowed[:, 16:] - full[:, 16:]).max().item() > 1e-2


def test_rope_layouts_give_equal_logits():
    """HF rotate-half q/k layout == Mistral interleaved layout with traditional RoPE."""
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=96, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=50, sliding_window=8)
    half = Model(args)
    inter_args = ModelArgs(**{**args.__dict__, "rope_traditional": True})
    inter = Model(inter_args)
    weights = dict(tree for tree in __import__("mlx.utils").utils.tree_flatten(half.parameters()))
    for name, w in list(weights.items()):
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = args.num_attention_heads if "q_proj" in name else args.num_key_value_heads
            weights[name] = mx.array(permute_half_to_interleaved(np.array(w), heads))
    inter.load_weights(list(weights.items()))
    tokens = mx.array(np.random.default_rng(1).integers(0, 50, size=(2, 30)))
    assert mx.abs(half(tokens) - inter(tokens)).max().item() < 1e-5


@pytest.mark.parametrize("bias", [False, True])
def test_weight_first_linear_gives_the_same_numbers(bias):
    """`Linear` multiplying (W xᵀ)ᵀ for a few rows equals x Wᵀ (+ b), for any leading shape;
    rows beyond `weight_first_rows` (and single rows) take the ordinary path."""
    layer = Linear(48, 80, bias=bias)
    mx.eval(layer.parameters())
    reference = lambda x: x @ layer.weight.T + (layer.bias if bias else 0)  # noqa: E731
    layer.weight_first_rows = 4
    for shape in [(1, 1, 48), (1, 2, 48), (1, 4, 48), (2, 2, 48), (3, 48), (1, 7, 48)]:
        x = mx.random.normal(shape)
        out = layer(x)
        assert out.shape == (*shape[:-1], 80)
        assert mx.allclose(out, reference(x), atol=1e-5, rtol=1e-5)


def test_compiled_steps_read_the_current_weights_and_order():
    """Passes over a few tokens after a cache run the blocks compiled: they equal the
    uncompiled block in either multiplication order, and see weights changed after they
    were first compiled (nothing is baked in)."""
    from mlx.utils import tree_map

    from mlxspec.models import TransformerBlock, set_weight_first_rows

    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=96, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=50)
    model = Model(args)
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])

    def steps(limit: int) -> mx.array:
        TransformerBlock.step_tokens = limit
        try:
            cache = model.make_cache()
            return mx.concatenate([model(tokens[:, :5], cache), model(tokens[:, 5:7], cache), model(tokens[:, 7:], cache)], axis=1)
        finally:
            TransformerBlock.step_tokens = 16

    for order in (0, 3):
        set_weight_first_rows(model, order)
        assert mx.abs(steps(16) - steps(0)).max().item() < 1e-5
    before = steps(16)
    model.update(tree_map(lambda w: w * 1.5, model.parameters()))
    after = steps(16)
    assert mx.abs(after - before).max().item() > 1e-2 and mx.abs(after - steps(0)).max().item() < 1e-5
