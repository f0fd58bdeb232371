"""Batched decoding: every row of a batch gets exactly what it gets alone (greedy; draft
model, feature draft, prompt lookup, lookup in front of a draft model (each row drafting
alone) or none; with a sliding window; rows of different lengths entering
and leaving), sampled rows follow the target's distribution (chi-square, with a broken
batch shown to fail), and the ragged batch cache gives a single sequence's logits."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxspec import Session
from mlxspec.drafts import LookupAndModel
from mlxspec.engine.batch import Batch, make_row
from mlxspec.models.batch_cache import BatchCache
from full_run import full_only
from test_speculative import FixedTimings, chi2_critical, chi2_stat, exact_joint, perturbed, tiny

PROMPTS = [list(range(3, 13)), [5, 9, 2], list(range(20, 60, 3)), [7] * 5 + [8, 9] * 4, [11, 12, 13, 14, 11, 12], [6]]


def alone(session: Session, prompt: list[int], **options) -> list[int]:
    return [s.token for s in session.stream(prompt, speculative=False, prompt_cache=False, **options)]


@pytest.mark.parametrize("draft", ["model", "feature", "fused", "ngram", "lookup+model", None])
@pytest.mark.parametrize("window", [None, 8])
def test_batched_rows_equal_their_greedy_output_alone(draft, window):
    from test_feature_draft import feature_draft, one_block_target

    target = one_block_target(20, window=window) if draft in ("feature", "fused") else tiny(20, window=window)
    kind = {"model": lambda: perturbed(target, 0.05, 21), "ngram": lambda: "ngram", None: lambda: None,
            "lookup+model": lambda: LookupAndModel(perturbed(target, 0.05, 21), min_match=2),
            "feature": lambda: feature_draft(target, 21, oracle=True, head_vocab=48),
            "fused": lambda: feature_draft(target, 22, oracle=True, feature_layers=[0])}[draft]()
    session = Session(target, None, kind, num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed")
    results = session.batch_generate(PROMPTS, max_tokens=30)
    for prompt, result in zip(PROMPTS, results):
        assert result.tokens == alone(session, prompt, max_tokens=30)
    if draft is not None:
        assert sum(r.stats.drafted for r in results) > 0  # speculation ran inside the batch
        assert sum(r.stats.accepted for r in results) > 0


def test_rows_joining_and_leaving_a_running_batch_are_unaffected():
    target = tiny(22, window=None)
    session = Session(target, None, perturbed(target, 0.05, 23), num_draft_tokens=4, calibration=FixedTimings())
    budgets = [5, 40, 17, 26, 9]
    outputs: list[list[int]] = [[] for _ in PROMPTS]
    batch = Batch(session)
    for i, (prompt, budget) in enumerate(zip(PROMPTS, budgets)):  # one joins every 3 steps
        request = session.request(prompt, max_tokens=budget, repetition_penalty=1.3 if i % 2 else 1.0)
        batch.add(make_row(session, request, lambda step, out=outputs[i]: out.append(step.token)))
        for _ in range(3):
            batch.step()
    batch.run()
    for i, (prompt, budget) in enumerate(zip(PROMPTS, budgets)):
        penalty = 1.3 if i % 2 else 1.0
        assert outputs[i] == alone(session, prompt, max_tokens=budget, repetition_penalty=penalty), i


def test_stop_strings_logprobs_and_cancel_in_a_batch(hf_full_dir):
    import mlxspec

    target, tok = mlxspec.load(str(hf_full_dir))
    session = Session(target, tok, "ngram", num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed")
    prompts = ["one two three", "four five six seven"]
    plain = [session.generate(p, max_tokens=20, speculative=False) for p in prompts]
    stop = plain[0][5:8]
    results = session.batch_generate(prompts, max_tokens=20, stop=[stop], logprobs=2)
    assert results[0].text == plain[0][: plain[0].index(stop)]
    assert results[0].stats.finish_reason == "stop"
    assert all(lp is not None and len(lp.top) == 2 for lp in results[1].logprobs)
    steps = list(session.stream(prompts[1], max_tokens=20, logprobs=2, speculative=False))
    assert [round(s.logprob.logprob, 4) for s in steps] == [round(lp.logprob, 4) for lp in results[1].logprobs]


def test_ragged_batch_cache_gives_each_row_its_own_logits():
    target = tiny(24, window=6)
    rows = [list(range(1, 12)), [4, 5, 6], list(range(30, 50))]
    cache = BatchCache(len(target.layers), target.args.sliding_window)
    for prompt in rows:
        single = target.make_cache(max_rollback=4)
        target(mx.array([prompt[:-1]]), single)
        cache.add(single)
    # each row: its last prompt token and two more (the pass begins itself); then roll back per row
    fed = mx.array([[p[-1], 7, 8] for p in rows])
    logits = target(fed, cache.layers)
    for b, prompt in enumerate(rows):
        expect = target(mx.array([prompt + [7, 8]]))[0, -3:]
        assert mx.allclose(logits[b], expect, atol=1e-4).item()
    cache.layout.rollback([2, 1, 0])
    logits = target(mx.array([[9], [9], [9]]), cache.layers)[:, -1]
    for b, (prompt, kept) in enumerate(zip(rows, ([], [7], [7, 8]))):
        expect = target(mx.array([prompt + kept + [9]]))[0, -1]
        assert mx.allclose(logits[b], expect, atol=1e-4).item()


@pytest.mark.parametrize("kind", ["feature", "model"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_each_row_drafts_and_draws_exactly_as_alone(temperature, kind):
    """With a fixed draft length, a row's drafts, acceptance and (seeded) draws in a batch
    are the ones it has alone: the feature drafter pairs each row's own hidden states with
    its own tokens (a draft that reads its features for real, so a row mix-up shows); a
    draft model's batch cache keeps each row's own text."""
    from test_feature_draft import feature_draft, one_block_target

    target = one_block_target(25, window=None)
    if kind == "feature":
        draft = feature_draft(target, 26)
        d = target.args.hidden_size
        draft.fc.weight, draft.fc.bias = mx.concatenate([mx.eye(d), 0.5 * mx.eye(d)], axis=1), mx.zeros((d,))
        draft.layers[0].update(target.layers[0].parameters())
    else:
        draft = perturbed(target, 0.05, 26)
    session = Session(target, None, draft, num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed")
    options = dict(max_tokens=40, temperature=temperature, seed=5)
    batched = session.batch_generate(PROMPTS, **options)
    for prompt, result in zip(PROMPTS, batched):
        single = list(session.stream(prompt, **options))
        assert result.tokens == [s.token for s in single]
        assert (result.stats.accepted, result.stats.drafted) == (single[-1].stats.accepted, single[-1].stats.drafted)
    assert sum(r.stats.accepted for r in batched) > 10


def batch_tokens(target, draft, length: int, runs: int, rows: int, prompt: list[int]) -> list[tuple[int, ...]]:
    """The first `length` tokens of the even rows (given `prompt`) of `runs` sampled batches
    of `rows` rows, each with its own seed; the odd rows have other prompts (one of a single
    token), drafting beside them."""
    session = Session(target, None, draft, num_draft_tokens=2, calibration=FixedTimings(), draft_policy="fixed")
    samples = []
    for run in range(runs):
        outputs: list[list[int]] = [[] for _ in range(rows)]
        batch = Batch(session)
        for r in range(rows):
            request = session.request(prompt if r % 2 == 0 else [4, 1, 2, 3][-1 - 2 * (r % 4 == 3):], max_tokens=length,
                                      temperature=1.0, seed=run * rows + r)
            batch.add(make_row(session, request, lambda step, out=outputs[r]: out.append(step.token)))
        batch.run()
        samples += [tuple(o) for o, r in zip(outputs, range(rows)) if r % 2 == 0]
    return samples


def batch_draft(kind: str, target):
    """A draft of each kind for a vocabulary-6 target."""
    from test_feature_draft import feature_draft

    return {"model": lambda: tiny(11, vocab=6, window=None, layers=1), "ngram": lambda: "ngram",
            "feature": lambda: feature_draft(target, 12),
            "lookup+model": lambda: LookupAndModel(tiny(11, vocab=6, window=None, layers=1), min_match=2)}[kind]()


def resample_from_p(p_lp, q_lp, draft_tokens, greedy=False, support=None, key=None):
    """The classic mistake: after a rejection, resample from p instead of max(0, p - q)."""
    from mlxspec.engine.verify import verify

    n, _ = verify(p_lp, q_lp, draft_tokens, greedy, support, key)
    return n, mx.random.categorical(mx.take_along_axis(p_lp, n[:, None, None], axis=1)[:, 0], axis=-1)


@pytest.mark.parametrize("kind, broken", [("model", False), ("model", True), ("feature", False), ("ngram", False),
                                          full_only("ngram", True), full_only("lookup+model", False)])
def test_sampled_rows_in_a_batch_have_the_target_distribution(kind, broken, monkeypatch):
    """Rows sampled together, other rows with other prompts beside them, every draft kind:
    the 2nd and 3rd tokens (drafted at k = 2 and verified in the first round; every token of
    the prompt recurs, so lookup always proposes) against the target's exact distribution.
    The broken variant resamples from p after a rejection: the test must catch it."""
    from mlxspec.engine import sampler
    from mlxspec.engine.sampling import SamplingParams
    if broken:
        monkeypatch.setattr(sampler, "verify", resample_from_p)
    target = tiny(12, vocab=6, window=None, layers=1)  # 15 cells expected 5 or more
    prompt = [0, 1, 2, 3, 4, 5, 1, 2]
    exact: dict[tuple[int, ...], float] = {}
    for key, prob in exact_joint(target, prompt, SamplingParams(1.0), 3).items():
        exact[key[1:]] = exact.get(key[1:], 0.0) + prob
    samples = batch_tokens(target, batch_draft(kind, target), 4, runs=300, rows=4, prompt=prompt)
    keys = sorted(exact)
    counts = np.zeros(len(keys))
    for s in samples:
        counts[keys.index(s[1:3])] += 1
    stat, df = chi2_stat(counts, np.array([exact[k] for k in keys]))
    assert (stat < chi2_critical(df)) != broken, (stat, df)


@pytest.mark.parametrize("draft", [None, "ngram"])
def test_a_finished_row_of_a_windowed_target_leaves_a_prompt_cache_equal_to_a_fresh_prefill(draft):
    """A batch row's cache goes to the prompt cache; with a sliding window it must keep
    attending within the window when the next request extends it (not as full attention)."""
    target = tiny(26, window=8)
    session = Session(target, None, draft, num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed")
    fresh = Session(target, None, draft, num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed",
                    prompt_cache_entries=0)
    first = [[3, 4, 5, 6, 7], [9, 8, 7]]
    done = session.batch_generate(first, max_tokens=20)
    second = [prompt + c.tokens + [11, 12] for prompt, c in zip(first, done)]  # the next turn extends the text
    again = session.batch_generate(second, max_tokens=16)
    assert sum(c.stats.prompt_cached_tokens for c in again) > 0  # the prompt cache was used
    assert [c.tokens for c in again] == [c.tokens for c in fresh.batch_generate(second, max_tokens=16)]
    alone = [[s.token for s in session.stream(p, max_tokens=16)] for p in second]  # from the cache, one by one
    assert alone == [c.tokens for c in again]
