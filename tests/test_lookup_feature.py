"""Prompt lookup in front of a feature draft: lookup proposes where its match runs far
back, the feature draft elsewhere, and after a round lookup proposed the feature draft
catches up from the hidden states that round's verification pass computed. Greedy output
equals plain decoding (alone, as batch rows, past the window); every proposal the feature
draft makes equals a fresh feature draft's over the same text (so its catch-up lost
nothing); sampled output has the target's distribution."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxspec import Session
from mlxspec.drafts import FeatureDrafter, LookupAndModel, NGramDrafter, make_drafter
from mlxspec.engine import FixedK, Generation, RandomKeys
from mlxspec.engine.sampling import SamplingParams
from test_kv_decoding import PROMPT
from test_prompt_cache_features import pair
from test_speculative import FixedTimings, chi2_critical, chi2_stat

REPEATING = PROMPT + PROMPT[:6] + [40, 41] + PROMPT[2:9]  # lookup finds long matches here


def counted(monkeypatch) -> dict[str, int]:
    """How many proposals each drafter made."""
    calls = {"lookup": 0, "feature": 0}
    for name, cls in (("lookup", NGramDrafter), ("feature", FeatureDrafter)):
        original = cls.propose

        def propose(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(cls, "propose", propose)
    return calls


@pytest.mark.parametrize("window", [8, None])
def test_greedy_lookup_in_front_of_a_feature_draft_equals_plain(window, monkeypatch):
    target, draft = pair("feature", window)
    calls = counted(monkeypatch)
    for k in (1, 3, 6):
        session = Session(target, None, LookupAndModel(draft, min_match=2), num_draft_tokens=k,
                          calibration=FixedTimings(), draft_policy="fixed")
        plain = [s.token for s in session.stream(REPEATING, max_tokens=40, speculative=False)]
        assert [s.token for s in session.stream(REPEATING, max_tokens=40)] == plain, k
        rows = session.batch_generate([REPEATING, PROMPT, [7, 8, 7, 8, 7]], max_tokens=30)
        for prompt, row in zip([REPEATING, PROMPT, [7, 8, 7, 8, 7]], rows):
            assert row.tokens == [s.token for s in session.stream(prompt, max_tokens=30, speculative=False,
                                                                  prompt_cache=False)]
    assert calls["lookup"] > 0 and calls["feature"] > 0


def test_the_feature_draft_proposes_after_lookup_rounds_as_a_fresh_one_would(monkeypatch):
    target, draft = pair("feature", None)
    k, seen = 3, []
    generation = Generation(target, make_drafter(LookupAndModel(draft, min_match=2), target, k, 64), FixedK(k),
                            SamplingParams(), RandomKeys(0), 64, target.make_cache(k))
    original = FeatureDrafter.propose

    def propose(self, last, n, pick):
        proposal = original(self, last, n, pick)
        seen.append((list(generation.history), proposal.tokens[0].tolist()))
        return proposal

    monkeypatch.setattr(FeatureDrafter, "propose", propose)
    generation.prefill(REPEATING)
    while len(generation.history) < len(REPEATING) + 40:
        generation.outlook()  # the policy asks first: that picks which drafter proposes
        generation.round(k)
    monkeypatch.setattr(FeatureDrafter, "propose", original)
    after_lookup = [h for h, _ in seen if len(h) > len(REPEATING) + 1]
    assert len(seen) >= 4 and after_lookup
    for history, tokens in seen:
        fresh = Generation(target, make_drafter(draft, target, k, 64), FixedK(k), SamplingParams(), RandomKeys(0), 64,
                           target.make_cache(k))
        assert fresh.prefill(history[:-1]) == history[-1]  # greedy: the same text
        assert fresh.drafter.propose([history[-1]], [k], [fresh.pick])[0].tokens[0].tolist() == tokens


def test_sampled_lookup_in_front_of_a_feature_draft_has_the_target_distribution():
    target, draft = pair("feature", None)
    params, prompt = SamplingParams(1.0), [3, 4, 5, 3, 4]
    vocab_probs = {}
    for first in range(target.args.vocab_size):  # P(first two tokens) exactly
        logits = target(mx.array([prompt]), target.make_cache())[0, -1]
        p1 = np.exp(np.array(logits - mx.logsumexp(logits)))
        if p1[first] < 1e-6:
            continue
        nxt = target(mx.array([prompt + [first]]), target.make_cache())[0, -1]
        p2 = np.exp(np.array(nxt - mx.logsumexp(nxt)))
        for second in np.nonzero(p2 > 1e-6)[0]:
            vocab_probs[(first, int(second))] = p1[first] * p2[second]
    keys = sorted(vocab_probs)
    counts = np.zeros(len(keys))
    for seed in range(1000):
        generation = Generation(target, make_drafter(LookupAndModel(draft, min_match=1), target, 2, 64, False),
                                FixedK(2), params, RandomKeys(seed), 64, target.make_cache(2))
        out = [generation.prefill(prompt)]
        generation.outlook()
        out += [t for t, _ in generation.round(2)]
        if tuple(out[:2]) in vocab_probs:
            counts[keys.index(tuple(out[:2]))] += 1
    stat, df = chi2_stat(counts, np.array([vocab_probs[k] for k in keys]))
    assert counts.sum() >= 995 and stat < chi2_critical(df), (stat, df)
