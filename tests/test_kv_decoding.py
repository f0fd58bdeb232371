"""Decoding with quantized key/value caches (`kv_bits`), end to end: greedy speculative ==
greedy plain (the same bits on both sides) token for token with a draft model, a feature
draft and prompt lookup, past the sliding window, alone and as batch rows; the prompt cache
hands back quantized caches; sampled output follows the distribution of the target over
its quantized cache (chi-square, and a broken verifier must fail)."""

from __future__ import annotations

import json
import warnings

import mlx.core as mx
import numpy as np
import pytest

from mlxspec import Session, stream_generate
from mlxspec.drafts import FeatureDraft, LookupAndModel, make_drafter
from mlxspec.engine import Calibration, FixedK, Generation, RandomKeys
from mlxspec.engine.sampling import SamplingParams, process_logits
from mlxspec.models import KVQuantization, Model
from mlxspec.models.config import ModelArgs
from test_batch import resample_from_p
from test_speculative import FixedTimings, chi2_critical, chi2_stat, perturbed

WINDOW = 8
PROMPT = list(range(3, 13))
PROMPTS = [PROMPT, [5, 9, 2], list(range(20, 60, 3)), [7] * 5 + [8, 9] * 4, [6]]
KV = dict(kv_group_size=32)


def tiny(seed: int, vocab: int = 64, window: int | None = WINDOW, layers: int = 2) -> Model:
    """A small target of head_dim 32 (so groups of 32 fit), with sharp output distributions."""
    mx.random.seed(seed)
    model = Model(ModelArgs(hidden_size=64, num_hidden_layers=layers, intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=32, vocab_size=vocab, sliding_window=window))
    model.update({"lm_head": {"weight": model.lm_head.weight * 6}})
    mx.eval(model.parameters())
    return model


def oracle_feature_draft(target: Model) -> FeatureDraft:
    """A feature draft re-running the target's one block on the token embedding (it nearly
    reproduces the next feature, so most drafts are accepted)."""
    t = target.args
    draft = FeatureDraft(ModelArgs(hidden_size=t.hidden_size, num_hidden_layers=1, intermediate_size=t.intermediate_size,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=t.vocab_size))
    d = t.hidden_size
    draft.fc.weight, draft.fc.bias = mx.concatenate([mx.eye(d), mx.zeros((d, d))], axis=1), mx.zeros((d,))
    draft.layers[0].update(target.layers[0].parameters())
    mx.eval(draft.parameters())
    return draft


def one_block_target(seed: int, window: int | None) -> Model:
    model = tiny(seed, window=window, layers=1)
    model.model.norm.weight = mx.ones_like(model.model.norm.weight)
    return model


def pair(kind: str, window: int | None) -> tuple[Model, object]:
    if kind == "feature":
        target = one_block_target(20, window)
        return target, oracle_feature_draft(target)
    target = tiny(0, window=window)
    return target, {"model": lambda: perturbed(target, 0.07, 2), "ngram": lambda: "ngram",
                    "lookup+model": lambda: LookupAndModel(perturbed(target, 0.07, 2), min_match=2)}[kind]()


def greedy(target: Model, prompt: list[int], n: int, **options) -> tuple[list[int], object]:
    steps = list(stream_generate(target, None, prompt, max_tokens=n, **options))
    return [s.token for s in steps], steps[-1].stats


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("kind", ["model", "feature", "ngram", "lookup+model"])
def test_greedy_speculative_equals_greedy_plain_past_the_window(kind, bits):
    target, draft = pair(kind, WINDOW)
    prompt = PROMPT + PROMPT[:6]  # a repeat, so that prompt lookup proposes
    expected, _ = greedy(target, prompt, 40, kv_bits=bits, **KV)
    assert len(prompt) + 40 > 6 * WINDOW
    drafted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a perturbed copy is not smaller than the target
        for k in (1, 3, 6):
            got, stats = greedy(target, prompt, 40, draft=draft, num_draft_tokens=k, draft_policy="fixed",
                                kv_bits=bits, **KV)
            assert got == expected, k
            drafted += stats.drafted
    assert drafted > 0


def test_the_quantized_cache_changes_the_text_so_the_greedy_test_can_fail():
    target, _ = pair("model", WINDOW)
    texts = {bits: greedy(target, PROMPT, 40, kv_bits=bits, **KV)[0] for bits in (None, 4)}
    assert texts[None] != texts[4]


@pytest.mark.filterwarnings("ignore:the draft")
def test_the_cost_policy_is_calibrated_over_quantized_caches(tmp_path):
    """The round times a session with kv_bits plans with are measured over quantized caches
    (an entry of their own in the calibration cache), and its greedy text is still plain's."""
    target, draft = pair("model", WINDOW)
    sessions = [Session(target, None, draft, num_draft_tokens=3, calibration=Calibration(tmp_path), **kv)
                for kv in ({}, dict(kv_bits=8, **KV))]
    for session in sessions:
        session.timings(SamplingParams())
    assert len(json.loads((tmp_path / "calibration.json").read_text())["entries"]) == 2
    expected, _ = greedy(target, PROMPT, 30, kv_bits=8, **KV)
    assert [s.token for s in sessions[1].stream(PROMPT, max_tokens=30)] == expected


@pytest.mark.parametrize("window", [WINDOW, None])
@pytest.mark.parametrize("kind", ["model", "feature", "ngram"])
def test_batched_rows_equal_their_greedy_output_alone(kind, window):
    target, draft = pair(kind, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = Session(target, None, draft, num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed",
                          kv_bits=4, **KV)
    results = session.batch_generate(PROMPTS, max_tokens=30)
    for prompt, result in zip(PROMPTS, results):
        alone = [s.token for s in session.stream(prompt, speculative=False, prompt_cache=False, max_tokens=30)]
        assert result.tokens == alone
    assert sum(r.stats.accepted for r in results) > 0  # speculation ran inside the batch


@pytest.mark.parametrize("batched", [False, True])
def test_the_prompt_cache_hands_back_quantized_caches_past_the_window(batched):
    """The next turn extends the text: it reuses the quantized cache the first left (a
    rolling one, wrapped), and its text equals a session's without a prompt cache."""
    target, draft = pair("model", WINDOW)
    options = dict(num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed", kv_bits=8, **KV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session, fresh = Session(target, None, draft, **options), Session(target, None, draft, prompt_cache_entries=0,
                                                                          **options)

    def run(s: Session, prompts: list[list[int]]) -> list[tuple[list[int], int]]:
        if batched:
            return [(c.tokens, c.stats.prompt_cached_tokens) for c in s.batch_generate(prompts, max_tokens=20)]
        return [([st.token for st in steps], steps[-1].stats.prompt_cached_tokens)
                for steps in (list(s.stream(p, max_tokens=20)) for p in prompts)]

    first = [PROMPT, [9, 8, 7]]
    done = run(session, first)
    second = [p + tokens + [11, 12] for p, (tokens, _) in zip(first, done)]
    again = run(session, second)
    assert all(cached > WINDOW for _, cached in again)
    assert all(isinstance(c.keys, tuple) for _, entry, _ in session.prompt_cache._store for c in entry)
    assert [t for t, _ in again] == [t for t, _ in run(fresh, second)]


def quantized_joint(model: Model, prompt: list[int], params: SamplingParams, n: int,
                    kv: KVQuantization) -> dict[tuple[int, ...], float]:
    """P(first n tokens) under the target over its quantized cache, by enumeration."""
    dist = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for prefix, prob in dist.items():
            logits = model(mx.array([prompt + list(prefix)]), model.make_cache(kv=kv))[:, -1]
            for t, pt in enumerate(np.exp(np.array(process_logits(logits, params)[0]))):
                if pt > 0:
                    nxt[prefix + (t,)] = prob * pt
        dist = nxt
    return dist


@pytest.mark.parametrize("broken", [False, True])
def test_sampled_speculation_follows_the_target_over_its_quantized_cache(broken, monkeypatch):
    """The first two tokens of seeded generations (k = 2, both models' caches at 4 bits)
    against the target's exact distribution over its quantized cache; the broken variant
    resamples from p after a rejection and must fail."""
    from mlxspec.engine import sampler

    if broken:
        monkeypatch.setattr(sampler, "verify", resample_from_p)
    kv, params = KVQuantization(4, 32), SamplingParams(1.0)
    target, draft = tiny(10, vocab=6, window=None, layers=1), tiny(11, vocab=6, window=None, layers=1)
    prompt = [1, 2, 3]
    exact = quantized_joint(target, prompt, params, 2, kv)
    keys = sorted(exact)
    counts = np.zeros(len(keys))
    for seed in range(1500):
        generation = Generation(target, make_drafter(draft, target, 2, 64, False, kv), FixedK(2), params,
                                RandomKeys(seed), 64, target.make_cache(2, kv=kv))
        out = [generation.prefill(prompt)] + [t for t, _ in generation.round(2)]
        counts[keys.index(tuple(out[:2]))] += 1
    stat, df = chi2_stat(counts, np.array([exact[k] for k in keys]))
    assert (stat < chi2_critical(df)) != broken, (stat, df)


@pytest.mark.filterwarnings("ignore:the draft")
@pytest.mark.parametrize("bits", [8, 4])
def test_greedy_with_a_draft_of_another_vocabulary_equals_plain(bits):
    """The other-vocabulary drafter's cache (rolled back by re-spelling) quantized too."""
    from mlxspec.drafts import OtherVocabularyDraft
    from test_other_vocabulary import BPE, SP, TRICKY

    target = tiny(20, vocab=SP.vocab_size, layers=1)
    draft = OtherVocabularyDraft(tiny(21, vocab=BPE.vocab_size, window=None, layers=1), BPE, SP)
    plain = Session(target, SP, kv_bits=bits, **KV)
    session = Session(target, SP, draft, num_draft_tokens=4, draft_policy="fixed", kv_bits=bits, **KV)
    for prompt in TRICKY[:3]:
        expected = [s.token for s in plain.stream(prompt, max_tokens=30)]
        assert [s.token for s in session.stream(prompt, max_tokens=30)] == expected, prompt
    assert all(c.kv == session.kv for c in session.draft.drafter(target, 4, 64, True, kv=session.kv).cache)
