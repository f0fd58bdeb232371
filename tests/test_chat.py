"""The library's request options: chat messages, stop strings (matched across token
boundaries, never emitted), min-p, the penalties and the logit bias (speculation stays exact:
greedy equals plain, sampled output has the processed target distribution), logprobs,
and the prompt cache (a second turn prefills only its new tokens and equals a fresh run)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec import Session
from mlxspec.engine.penalties import penalize, recent_windows
from mlxspec.engine.sampling import SamplingParams, process_logits
from mlxspec.errors import InputError, InputTypeError
from mlxspec.text.stops import StopMatcher
from full_run import full_only
from test_speculative import FixedTimings, chi2_critical, chi2_stat, new_generation, perturbed, tiny


def feed(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.add(p) for p in pieces)
    return out + matcher.flush(), matcher.stopped


@pytest.mark.parametrize("pieces", [["Hello wo", "rld. EN", "D here"], ["Hello world. ", "E", "N", "D", " here"],
                                    ["Hello world. END here"], list("Hello world. END here")])
def test_a_stop_string_across_token_boundaries_is_never_emitted(pieces):
    assert feed(["END", "xyz"], pieces) == ("Hello world. ", True)


def test_text_that_only_looks_like_a_stop_string_comes_out_whole():
    assert feed(["ENDING"], ["Hello END", "IN", "G?"]) == ("Hello ", True)
    assert feed(["ENDING"], ["Hello END", "IN", "x"]) == ("Hello ENDINx", False)
    assert feed(["ab"], ["a", "a", "b"]) == ("a", True)


def exact_joint_penalized(model, prompt: list[int], params: SamplingParams, n: int) -> dict:
    dist = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for prefix, prob in dist.items():
            text = prompt + list(prefix)
            logits = model(mx.array([text]))[:, -1]
            window = recent_windows(text, None, params.repetition_context, model.args.vocab_size)
            lp = process_logits(penalize(logits, window, params, model.args.vocab_size), params)
            for t, pt in enumerate(np.exp(np.array(lp[0]))):
                if pt > 0:
                    nxt[prefix + (t,)] = prob * pt
        dist = nxt
    return dist


@pytest.mark.parametrize("params", [full_only(SamplingParams(1.0, min_p=0.2, repetition_penalty=1.8)),
                                    full_only(SamplingParams(0.8, repetition_penalty=0.6, repetition_context=2)),
                                    SamplingParams(1.0, presence_penalty=1.5, frequency_penalty=0.7,
                                                   repetition_context=3, logit_bias=((2, 1.5), (4, -2.0)))])
def test_sampled_speculation_with_min_p_and_penalties_has_the_target_distribution(params):
    target, draft = tiny(30, vocab=6, window=None, layers=1), tiny(31, vocab=6, window=None, layers=1)
    prompt, length = [1, 2, 3, 1], 3
    exact = exact_joint_penalized(target, prompt, params, length)
    keys = sorted(exact)
    counts = np.zeros(len(keys))
    for seed in range(2000):
        generation = new_generation(target, draft, params, 2, seed)
        out = [generation.prefill(prompt)]
        while len(out) < length:
            out += [t for t, _ in generation.round(2)]
        counts[keys.index(tuple(out[:length]))] += 1
    stat, df = chi2_stat(counts, np.array([exact[k] for k in keys]))
    assert stat < chi2_critical(df), (stat, df)


@pytest.mark.parametrize("options", [dict(repetition_penalty=1.5), dict(repetition_penalty=1.2, min_p=0.3),
                                     dict(presence_penalty=1.5, frequency_penalty=0.5),
                                     dict(logit_bias={"7": 3.0}, frequency_penalty=2.0)])
def test_greedy_speculation_with_a_penalty_equals_plain(options):
    target = tiny(32)
    session = Session(target, None, perturbed(target, 0.05, 33), num_draft_tokens=4, calibration=FixedTimings(),
                      draft_policy="fixed")
    prompt = [3, 4, 5, 3, 4, 5, 6]
    spec = [s.token for s in session.stream(prompt, max_tokens=40, **options)]
    plain = [s.token for s in session.stream(prompt, max_tokens=40, speculative=False, **options)]
    assert spec == plain
    assert spec != [s.token for s in session.stream(prompt, max_tokens=40, speculative=False)]


def test_the_second_turn_prefills_only_its_new_tokens_and_equals_a_fresh_run(hf_full_dir):
    target, tok = mlxspec.load(str(hf_full_dir))
    session = Session(target, tok, "ngram", num_draft_tokens=3, calibration=FixedTimings())
    turn = [{"role": "user", "content": "Tell me about the sea and the sky."}]
    first = list(session.stream_chat(turn, max_tokens=12))
    assert first[-1].stats.prompt_cached_tokens == 0
    history = turn + [{"role": "assistant", "content": "".join(s.text for s in first)},
                      {"role": "user", "content": "And the mountains?"}]
    second = list(session.stream_chat(history, max_tokens=12))
    stats = second[-1].stats
    whole = len(tok.apply_chat(history))
    assert stats.prompt_tokens == whole and stats.prompt_cached_tokens >= len(tok.apply_chat(turn))
    fresh = Session(target, tok)
    assert [s.token for s in second] == [s.token for s in fresh.stream_chat(history, max_tokens=12,
                                                                            prompt_cache=False)]


def test_logprobs_are_the_targets_log_softmax(hf_full_dir):
    target, tok = mlxspec.load(str(hf_full_dir))
    steps = list(Session(target, tok).stream("one two", max_tokens=3, logprobs=3))
    ids = tok.encode("one two")
    logits = target(mx.array([ids + [s.token for s in steps[:-1]]]))[0, len(ids) - 1:]
    lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    for i, step in enumerate(steps):
        assert abs(step.logprob.logprob - lp[i, step.token]) < 1e-4
        assert [t for t, _ in step.logprob.top] == list(np.argsort(-lp[i])[:3])


@pytest.mark.parametrize("options, error", [
    (dict(stop=""), InputError), (dict(stop=[1]), InputTypeError), (dict(logprobs=21), InputError),
    (dict(logprobs=True), InputTypeError), (dict(min_p=1.5), InputError), (dict(repetition_penalty=0), InputError),
    (dict(speculative="yes"), InputTypeError)])
def test_bad_options_are_one_clear_error(options, error):
    with pytest.raises(error):
        Session(tiny(34)).stream([1, 2, 3], **options)


def test_the_prompt_cache_past_a_sliding_window():
    """A rolling cache remembers only its window (+ k): a prompt that extends what it holds is
    reused and gives a fresh run's tokens; one that differs earlier than it can roll back is
    prefilled from the start."""
    target = tiny(35, window=8)
    session = Session(target, None, perturbed(target, 0.05, 36), num_draft_tokens=3, calibration=FixedTimings(),
                      draft_policy="fixed")
    first_prompt = list(range(3, 23))
    first = [s.token for s in session.stream(first_prompt, max_tokens=12)]
    follow = first_prompt + first + [40, 41, 42]
    steps = list(session.stream(follow, max_tokens=12))
    assert steps[-1].stats.prompt_cached_tokens >= len(first_prompt) + len(first) - 1
    fresh = Session(target)
    assert [s.token for s in steps] == [s.token for s in fresh.stream(follow, max_tokens=12, prompt_cache=False)]
    diverged = first_prompt[:10] + [50, 51, 52] + first_prompt[10:]
    steps = list(session.stream(diverged, max_tokens=12))
    assert steps[-1].stats.prompt_cached_tokens == 0  # 10 shared tokens, but the window has moved past them
    assert [s.token for s in steps] == [s.token for s in fresh.stream(diverged, max_tokens=12, prompt_cache=False)]
