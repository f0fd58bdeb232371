"""Cache invariants (mistral-src's test_generate idea): one full pass == chunked prefill
through the cache == token by token; rolling back and re-feeding reproduces a fresh pass."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxspec.models.cache import KVCache, RollingKVCache
from mlxspec.models.config import ModelArgs
from mlxspec.models import Model

WINDOW = 8
SEQ = 100  # 12.5 windows


def tiny_model(window: int | None, seed: int = 0) -> Model:
    mx.random.seed(seed)
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=96, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=97, sliding_window=window)
    model = Model(args)
    # sharpen attention so that which keys are visible really changes the output
    model.update({"model": {"layers": [
        {"self_attn": {"q_proj": {"weight": layer.self_attn.q_proj.weight * 4}}} for layer in model.layers
    ]}})
    return model


def tokens(n: int = SEQ, seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 97, size=(1, n)))


def feed(model: Model, toks: mx.array, cache, chunk: int) -> mx.array:
    outs = [model(toks[:, i : i + chunk], cache) for i in range(0, toks.shape[1], chunk)]
    return mx.concatenate(outs, axis=1)


@pytest.mark.parametrize("window", [WINDOW, None])
@pytest.mark.parametrize("max_rollback", [0, 5])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 8, 9, 13, 16, 40, SEQ])
def test_one_pass_equals_chunked_equals_stepwise(window, max_rollback, chunk):
    model, toks = tiny_model(window), tokens()
    full = model(toks)
    chunked = feed(model, toks, model.make_cache(max_rollback), chunk)
    assert mx.abs(full - chunked).max().item() < 1e-4


def test_caches_change_with_window():
    """The invariant test can fail: a model without the window disagrees after W tokens."""
    toks = tokens()
    assert mx.abs(tiny_model(WINDOW)(toks) - tiny_model(None)(toks))[:, WINDOW:].max().item() > 1e-2


@pytest.mark.parametrize("window", [WINDOW, None])
def test_rollback_then_refeed_equals_fresh_pass(window):
    """Speculative rounds: feed k+1 drafted tokens, reject the last r, feed the correction."""
    model = tiny_model(window)
    rng = np.random.default_rng(3)
    k_max = 6
    accepted = tokens(20, seed=1)[0].tolist()
    cache = model.make_cache(max_rollback=k_max)
    model(mx.array([accepted]), cache)
    for _ in range(25):  # runs ~10 windows past the prompt
        k = int(rng.integers(1, k_max + 1))
        draft = rng.integers(0, 97, size=k + 1).tolist()
        model(mx.array([draft]), cache)
        r = int(rng.integers(0, k + 1))
        for c in cache:
            c.rollback(r)
        accepted += draft[: k + 1 - r]
        nxt = int(rng.integers(0, 97))
        got = model(mx.array([[nxt]]), cache)[:, -1]
        accepted.append(nxt)
        fresh = model(mx.array([accepted]))[:, -1]
        assert mx.abs(got - fresh).max().item() < 1e-4
    assert len(accepted) > 4 * WINDOW


def test_rolling_memory_is_constant():
    cache = RollingKVCache(window=WINDOW, max_rollback=3)
    kv = mx.zeros((1, 2, 1, 4))
    for _ in range(WINDOW + 3):
        cache.update_and_fetch(kv, kv)
    size = cache.nbytes
    for _ in range(500):
        cache.update_and_fetch(kv, kv)
    assert cache.nbytes == size == 2 * (WINDOW + 3) * 2 * 4 * 4
    assert cache.offset == WINDOW + 3 + 500


def test_rollback_limits():
    cache = RollingKVCache(window=4, max_rollback=2)
    kv = mx.zeros((1, 1, 10, 2))
    cache.update_and_fetch(kv, kv)
    assert cache.max_rollback == 2
    cache.rollback(1)
    cache.rollback(1)
    with pytest.raises(ValueError):
        cache.rollback(1)  # would need history that already left the buffer
    grow = KVCache()
    grow.update_and_fetch(kv, kv)
    with pytest.raises(ValueError):
        grow.rollback(11)
    grow.rollback(10)
    assert grow.offset == 0
