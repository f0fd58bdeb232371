"""Autoregressive generation: cached greedy decoding == recomputing everything each step;
sampling helpers; reproducible seeds."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.errors import InputError
from mlxspec.engine.sampling import SamplingParams, process_logits, top_k_mask, top_p_mask


def naive_greedy(model, prompt_ids, n):
    """No cache at all: a full pass over the whole sequence for every new token."""
    seq = list(prompt_ids)
    for _ in range(n):
        seq.append(int(mx.argmax(model(mx.array([seq]))[0, -1]).item()))
    return seq[len(prompt_ids):]


@pytest.mark.parametrize("chunk", [None, 5])
def test_greedy_equals_naive_recompute_past_the_window(hf_window_dir, chunk):
    model, tok = mlxspec.load(hf_window_dir)
    prompt = tok.encode("Once upon a time, in a land far away, there lived a small dragon who")
    steps = list(mlxspec.stream_generate(model, tok, prompt, max_tokens=60, prefill_chunk=chunk))
    ours = [s.token for s in steps]
    assert len(ours) + len(prompt) > 4 * 16  # several windows
    assert ours == naive_greedy(model, prompt, len(ours))
    assert steps[-1].stats.finish_reason in ("length", "stop")
    assert steps[-1].stats.generation_tokens == len(ours)
    assert "".join(s.text for s in steps) == tok.decode(ours)


def test_seed_makes_sampling_reproducible(hf_window_dir):
    model, tok = mlxspec.load(hf_window_dir)
    run = lambda seed: mlxspec.generate(model, tok, "Hello", max_tokens=20, temperature=1.0, seed=seed)  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_bad_requests(hf_window_dir):
    model, tok = mlxspec.load(hf_window_dir)
    with pytest.raises(InputError, match="prompt is empty"):
        mlxspec.generate(model, tok, "   ")
    with pytest.raises(InputError, match="max_tokens"):
        mlxspec.generate(model, tok, "hi", max_tokens=-1)
    with pytest.raises(InputError, match="context of 512"):
        mlxspec.generate(model, tok, list(range(3, 600)))
    with pytest.raises(InputError, match="temperature"):
        mlxspec.generate(model, tok, "hi", temperature=-0.5)
    with pytest.raises(InputError, match="top_p"):
        mlxspec.generate(model, tok, "hi", top_p=0.0)
    assert mlxspec.generate(model, tok, "hi", max_tokens=0) == ""


def test_generation_stops_at_context(hf_window_dir):
    model, tok = mlxspec.load(hf_window_dir)
    steps = list(mlxspec.stream_generate(model, tok, list(range(3, 503)), max_tokens=100))
    assert len(steps) == 13 and steps[-1].stats.finish_reason == "length"  # 512 - 500 + 1


def test_top_k_and_top_p_masks():
    logits = mx.array([[2.0, 1.0, 0.5, -1.0, 3.0]])
    assert top_k_mask(logits, 2).tolist() == [[True, False, False, False, True]]
    logprobs = mx.log(mx.array([[0.1, 0.5, 0.15, 0.25]]))
    assert top_p_mask(logprobs, 0.5).tolist() == [[False, True, False, False]]
    assert top_p_mask(logprobs, 0.7).tolist() == [[False, True, False, True]]
    assert top_p_mask(logprobs, 0.76).tolist() == [[False, True, True, True]]


@pytest.mark.parametrize("k, p", [(1, 0.05), (7, 0.5), (300, 0.9), (999, 0.999)])
def test_masks_match_a_sorting_reference(k, p):
    """The partition / threshold masks keep exactly what sorting the whole row keeps."""
    logits = np.random.default_rng(k).normal(size=(3, 1000)).astype(np.float32) * 2
    order = np.argsort(-logits, axis=-1)
    ref_k = np.zeros(logits.shape, bool)
    np.put_along_axis(ref_k, order[:, :k], True, axis=-1)
    assert (np.array(top_k_mask(mx.array(logits), k)) == ref_k).all()
    logprobs = logits - np.log(np.exp(logits.astype(np.float64)).sum(axis=-1, keepdims=True))
    sorted_probs = np.exp(np.take_along_axis(logprobs, order, axis=-1))
    keep_sorted = np.cumsum(sorted_probs, axis=-1) - sorted_probs < p
    ref_p = np.zeros(logits.shape, bool)
    np.put_along_axis(ref_p, order, keep_sorted, axis=-1)
    assert (np.array(top_p_mask(mx.array(logprobs.astype(np.float32)), p)) == ref_p).all()


def test_process_logits_is_the_sampled_distribution():
    logits = mx.array(np.random.default_rng(0).normal(size=(1, 50)).astype(np.float32))
    params = SamplingParams(temperature=0.7, top_p=0.8, top_k=20)
    probs = np.exp(np.array(process_logits(logits, params)))[0]
    assert abs(probs.sum() - 1) < 1e-5 and (probs > 0).sum() <= 20
    ref = np.exp(np.array(logits)[0] / 0.7)
    kept = probs > 0
    np.testing.assert_allclose(probs[kept], ref[kept] / ref[kept].sum(), rtol=1e-5)
    greedy = np.exp(np.array(process_logits(logits, SamplingParams())))[0]
    assert greedy.argmax() == int(mx.argmax(logits)) and greedy.max() == 1.0
