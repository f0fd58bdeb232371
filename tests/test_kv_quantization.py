"""The quantized key/value cache, cache by cache: attention over the packed data equals
attention over the dequantized values; step by step == chunked prefill == one pass against
an oracle cache holding the dequantized values in full precision (windowed and not); after
rounds of feeding, rolling back and wrapping, a cache equals a fresh one fed the kept text;
batch rows keep the form; at 4 bits the bytes are <= 0.3 of float16's; bad settings fail."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxspec import Session
from mlxspec.errors import InputError
from mlxspec.models import KVCache, KVQuantization, Model, RollingKVCache
from mlxspec.models.batch_cache import BatchCache
from mlxspec.models.config import ModelArgs
from mlxspec.models.kv_quantization import PACKED_QUERIES, quantized_attention

WINDOW = 8
SEQ = 60
VOCAB = 97


def tiny_model(window: int | None, seed: int = 0, layers: int = 2) -> Model:
    """Grouped-query attention (4 query heads over 2), head_dim 32: two groups of 16 or one of 32."""
    mx.random.seed(seed)
    model = Model(ModelArgs(hidden_size=64, num_hidden_layers=layers, intermediate_size=96, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=32, vocab_size=VOCAB, sliding_window=window))
    # sharpen attention so that which keys are visible, and their rounding, changes the output
    model.update({"model": {"layers": [
        {"self_attn": {"q_proj": {"weight": layer.self_attn.q_proj.weight * 4}}} for layer in model.layers
    ]}})
    mx.eval(model.parameters())
    return model


def tokens(n: int = SEQ, seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, VOCAB, size=(1, n)))


def feed(model: Model, toks: mx.array, cache, chunk: int) -> mx.array:
    return mx.concatenate([model(toks[:, i : i + chunk], cache) for i in range(0, toks.shape[1], chunk)], axis=1)


class RoundTrip:
    """The oracle: a cache that stores full-precision keys/values already rounded as `kv`
    rounds them (quantized, then dequantized)."""

    def __init__(self, kv: KVQuantization) -> None:
        self.kv = kv

    def check(self, head_dim: int, whose: str = "") -> None:
        self.kv.check(head_dim)

    def encode(self, x: mx.array) -> mx.array:
        return mx.dequantize(*self.kv.encode(x), group_size=self.kv.group_size, bits=self.kv.bits)


SETTINGS = [KVQuantization(8, 32), KVQuantization(4, 32)]


@pytest.mark.parametrize("repeats", [1, 2])
@pytest.mark.parametrize("mask", ["none", "causal", "band", "rows"])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("queries", ["few", "chunk"])  # packed data / a prefill chunk's dequantized layer
def test_attention_over_the_packed_data_equals_attention_over_the_dequantized_values(repeats, mask, bits, queries):
    kv = KVQuantization(bits, 32)
    rng = np.random.default_rng(bits)
    L = 1 if mask == "none" else 5 if queries == "few" else PACKED_QUERIES + 3
    B, T, D = 2, L + 7, 64
    q = mx.array(rng.standard_normal((B, 2 * repeats, L, D)), dtype=mx.float32)
    k, v = (mx.array(rng.standard_normal((B, 2, T, D)), dtype=mx.float32) for _ in range(2))
    m = {"none": None, "causal": "causal",
         "band": (mx.arange(T)[None] <= mx.arange(T - L, T)[:, None]) & (mx.arange(T)[None] > mx.arange(T - L, T)[:, None] - 4),
         "rows": mx.array(rng.random((B, 1, L, T)) < 0.6) | (mx.arange(T) == T - 1)}[mask]
    kq, vq = kv.encode(k), kv.encode(v)
    got = quantized_attention(q, kq, vq, D**-0.5, m)
    exact = mx.fast.scaled_dot_product_attention(q, RoundTrip(kv).encode(k), RoundTrip(kv).encode(v), scale=D**-0.5,
                                                 mask=m)
    assert mx.abs(got - exact).max().item() < 1e-4
    # ... and it reads the rounded values: the unrounded ones give another answer
    full = mx.fast.scaled_dot_product_attention(q, k, v, scale=D**-0.5, mask=m)
    assert mx.abs(got - full).max().item() > (1e-3 if bits == 4 else 1e-5)


@pytest.mark.parametrize("window", [WINDOW, None])
@pytest.mark.parametrize("kv", SETTINGS, ids=["8bit", "4bit"])
@pytest.mark.parametrize("max_rollback", [0, 5])
def test_stepwise_chunked_and_one_pass_equal_the_dequantized_oracle(window, kv, max_rollback):
    model, toks = tiny_model(window), tokens()
    oracle = feed(model, toks, model.make_cache(max_rollback, kv=RoundTrip(kv)), SEQ)
    for chunk in (1, 3, 8, 9, 13, SEQ):
        got = feed(model, toks, model.make_cache(max_rollback, kv=kv), chunk)
        assert mx.abs(got - oracle).max().item() < 1e-4, chunk
    assert mx.abs(model(toks) - oracle).max().item() > 1e-3  # the rounding shows: the test can fail


@pytest.mark.parametrize("window", [WINDOW, None])
@pytest.mark.parametrize("bits", [4, 8])
def test_rollback_and_wrap_leave_a_cache_equal_to_a_fresh_one_fed_the_kept_text(window, bits):
    """Speculative rounds past the window: feed k+1 drafted tokens, reject the last r, feed
    the correction; the logits equal a fresh quantized cache's over the kept text."""
    kv = KVQuantization(bits, 32)
    model, rng, k_max = tiny_model(window), np.random.default_rng(3), 6
    accepted = tokens(12, seed=1)[0].tolist()
    cache = model.make_cache(max_rollback=k_max, kv=kv)
    model(mx.array([accepted]), cache)
    for _ in range(14):  # runs ~7 windows past the prompt
        k = int(rng.integers(1, k_max + 1))
        draft = rng.integers(0, VOCAB, size=k + 1).tolist()
        model(mx.array([draft]), cache)
        r = int(rng.integers(0, k + 1))
        cache.rollback(r)
        accepted += draft[: k + 1 - r]
        nxt = int(rng.integers(0, VOCAB))
        got = model(mx.array([[nxt]]), cache)[:, -1]
        accepted.append(nxt)
        fresh = model(mx.array([accepted]), model.make_cache(kv=kv))[:, -1]
        assert mx.abs(got - fresh).max().item() < 1e-4
    assert len(accepted) > 4 * WINDOW
    assert all(isinstance(c.keys, tuple) for c in cache)  # the packed data, never a dequantized copy


def test_batch_rows_enter_from_quantized_caches_roll_back_and_leave():
    """Rows entering a batch from single quantized caches (one of them empty), fed together,
    rolled back by different counts, one leaving: each row's logits equal its text alone."""
    kv = KVQuantization(4, 32)
    model = tiny_model(None)
    texts = [tokens(9, seed=s)[0].tolist() for s in (1, 2, 3)]
    batch = BatchCache(len(model.layers), None)
    for text in texts:
        single = model.make_cache(kv=kv)
        model(mx.array([text]), single)
        batch.add(single)
    assert all(layer.kv == kv for layer in batch.layers)
    model(mx.array([[5, 6, 7]] * 3), batch.layers)
    batch.rollback([0, 2, 3])
    texts = [texts[0] + [5, 6, 7], texts[1] + [5], texts[2]]
    batch.keep([0, 2])
    texts = [texts[0], texts[2]]
    got = model(mx.array([[11], [12]]), batch.layers)[:, -1]
    for row, (text, last) in enumerate(zip(texts, (11, 12))):
        alone = model(mx.array([text + [last]]), model.make_cache(kv=kv))[0, -1]
        assert mx.abs(got[row] - alone).max().item() < 1e-4
    cache = batch.row(0)
    assert cache is not None and cache[0].kv == kv and isinstance(cache[0].keys, tuple)


@pytest.mark.parametrize("make", [lambda kv: KVCache(kv), lambda kv: RollingKVCache(64, 6, kv)], ids=["full", "rolling"])
def test_at_4_bits_the_cache_takes_at_most_03_of_float16s_bytes(make):
    rng = np.random.default_rng(0)
    chunks = [mx.array(rng.standard_normal((1, 8, n, 128)), dtype=mx.float16) for n in (100, 1, 7, 200)]
    sizes = {}
    for name, kv in (("float16", None), ("4bit", KVQuantization(4, 64)), ("8bit", KVQuantization(8, 64))):
        cache = make(kv)
        for c in chunks:
            cache.update_and_fetch(c, c)
        mx.eval(cache.keys, cache.values)
        sizes[name] = cache.nbytes
        assert cache.nbytes == sum(a.nbytes for part in (cache.keys, cache.values)
                                   for a in (part if isinstance(part, tuple) else [part]))
    assert sizes["4bit"] / sizes["float16"] == pytest.approx(4.5 / 16)  # 4 bits + a scale and a bias per 64
    assert sizes["4bit"] <= 0.3 * sizes["float16"]
    assert sizes["8bit"] / sizes["float16"] == pytest.approx(8.5 / 16)


def test_a_models_caches_count_their_bytes_as_stored():
    """What a memory planner reads: a float16 model's caches, every layer, at 4 bits."""
    model = tiny_model(WINDOW)
    model.set_dtype(mx.float16)
    sizes = {}
    for kv in (None, KVQuantization(4, 32)):
        cache = model.make_cache(4, kv=kv)
        model(tokens(40), cache)
        mx.eval(cache.arrays())
        sizes[kv] = cache.nbytes
        assert cache.nbytes == sum(c.nbytes for c in cache) > 0
    assert sizes[KVQuantization(4, 32)] / sizes[None] == pytest.approx((4 + 32 / 32) / 16)  # a scale and bias per 32


def test_a_batchs_bytes_count_the_packed_data():
    kv = KVQuantization(4, 64)
    sizes = []
    for setting in (None, kv):
        batch = BatchCache(1, None)
        for n in (5, 9):
            single = KVCache(setting)
            x = mx.ones((1, 2, n, 128), dtype=mx.float16)
            single.update_and_fetch(x, x)
            batch.layers[0].add(single)
            batch.layout.add(mx.arange(n), n)
        sizes.append(batch.nbytes)
        assert batch.nbytes == batch.layers[0].nbytes
    assert sizes[1] / sizes[0] == pytest.approx(4.5 / 16)


@pytest.mark.parametrize("bits, group, message", [
    (5, 64, "kv_bits must be 4 or 8, got 5"), (True, 64, "kv_bits must be 4 or 8"),
    (4, 48, "kv_group_size must be one of 32, 64, 128, got 48"),
    (4, 64, "kv_group_size 64 does not divide the model's head_dim 32; use 32"),
])
def test_bad_settings_are_one_clear_line_from_the_library(bits, group, message):
    with pytest.raises(InputError, match=message):
        Session(tiny_model(None), kv_bits=bits, kv_group_size=group)


def test_a_draft_whose_head_dim_the_groups_do_not_divide_fails_at_the_session():
    target = tiny_model(None)
    mx.random.seed(1)
    draft = Model(ModelArgs(hidden_size=64, num_hidden_layers=1, intermediate_size=96, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=VOCAB))  # head_dim 16
    with pytest.raises(InputError, match="head_dim 16"):
        Session(target, None, draft, kv_bits=8, kv_group_size=32)


def test_a_pipelined_target_refuses_quantized_caches():
    from mlxspec.pipeline.link import LeadModel

    lead = LeadModel(ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=96, num_attention_heads=2,
                               num_key_value_heads=2, vocab_size=VOCAB))
    with pytest.raises(InputError, match="a pipelined target keeps full-precision caches"):
        Session(lead, kv_bits=4, kv_group_size=32)
