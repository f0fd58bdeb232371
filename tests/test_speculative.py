"""Speculative decoding: greedy output == the target's greedy output token for token;
sampled output follows the target's distribution (chi-square tests that can fail);
acceptance reaches sum(min(p, q)); rollback leaves caches as a fresh pass would."""

from __future__ import annotations

import math
import warnings

import mlx.core as mx
import numpy as np
import pytest

from full_run import full_only
from mlxspec import Session, stream_generate
from mlxspec.drafts import make_drafter
from mlxspec.engine import FixedK, Generation, RandomKeys, Timings
from mlxspec.engine.sampling import SamplingParams, process_logits
from mlxspec.engine.verify import draw, verify
from mlxspec.errors import InputError
from mlxspec.models import Model
from mlxspec.models.config import ModelArgs

WINDOW = 8


def tiny(seed: int, vocab: int = 64, window: int | None = WINDOW, layers: int = 2) -> Model:
    mx.random.seed(seed)
    args = ModelArgs(hidden_size=64, num_hidden_layers=layers, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=vocab, sliding_window=window)
    model = Model(args)
    # larger logits than the default init, so distributions are far from uniform
    model.update({"lm_head": {"weight": model.lm_head.weight * 6}})
    mx.eval(model.parameters())
    return model


def perturbed(model: Model, scale: float, seed: int) -> Model:
    """A copy of `model` with Gaussian noise on every weight: agrees partly."""
    from mlx.utils import tree_flatten, tree_unflatten

    mx.random.seed(seed)
    copy = Model(model.args)
    noisy = [(k, v + scale * mx.random.normal(v.shape) * mx.abs(v).mean()) for k, v in tree_flatten(model.parameters())]
    copy.update(tree_unflatten(noisy))
    mx.eval(copy.parameters())
    return copy


def tokens(model, prompt, n, **options):
    steps = list(stream_generate(model, None, prompt, max_tokens=n, **options))
    return [s.token for s in steps], steps[-1].stats if steps else None


def new_generation(target: Model, draft, params: SamplingParams, k: int, seed: int = 0, chunk: int = 512) -> Generation:
    """The speculative loop itself, drafting k tokens a round, with its own random stream."""
    return Generation(target, make_drafter(draft, target, k, chunk), FixedK(k), params, RandomKeys(seed), chunk)


TARGET = tiny(0)
DRAFTS = {"random": tiny(1), "copy": TARGET, "half": perturbed(TARGET, 0.07, 2)}
PROMPT = list(range(3, 13))


@pytest.mark.parametrize("draft", list(DRAFTS))
def test_greedy_speculative_equals_greedy_autoregressive(draft):
    expected, _ = tokens(TARGET, PROMPT, 48)
    assert len(PROMPT) + 48 > 6 * WINDOW
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the copy is not smaller than the target
        for k in range(1, 9):
            got, stats = tokens(TARGET, PROMPT, 48, draft=DRAFTS[draft], num_draft_tokens=k, draft_policy="fixed")
            assert got == expected, f"k={k}"
            rates.append(stats.acceptance_rate)
    rate = float(np.mean(rates))
    assert {"random": rate < 0.2, "copy": rate == 1.0, "half": 0.25 < rate < 0.85}[draft], rate


def test_greedy_with_adaptive_length_and_heuristic_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path))
    expected, _ = tokens(TARGET, PROMPT, 40)
    for policy in ("cost", "heuristic"):
        got, stats = tokens(TARGET, PROMPT, 40, draft=DRAFTS["half"], num_draft_tokens=6, draft_policy=policy)
        assert got == expected and stats.rounds > 0
    assert (tmp_path / "calibration.json").is_file()


def test_a_seed_gives_the_same_text_whether_or_not_the_calibration_was_cached(tmp_path, monkeypatch):
    """The calibration samples rounds of its own; it must not shift the request's random stream."""
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path))
    options = dict(draft=DRAFTS["half"], num_draft_tokens=3, temperature=1.0, seed=11)
    first, _ = tokens(TARGET, PROMPT, 24, **options)  # measures and caches
    assert (tmp_path / "calibration.json").is_file()
    second, _ = tokens(TARGET, PROMPT, 24, **options)  # reads the cache
    assert first == second


# ---- distribution exactness -------------------------------------------------------------

def chi2_critical(df: int, z: float = 3.719) -> float:
    """Upper quantile of chi-square (Wilson-Hilferty); z=3.719 is the 1e-4 level."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2_stat(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic, pooling cells with expected count < 5 into one."""
    expected = probs * counts.sum()
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum() - 1)


def broken_verify(p_lp, q_lp, draft_tokens, greedy=False, support=None):
    """The classic mistake: after a rejection, resample from p instead of max(0, p - q)."""
    n, _ = verify(p_lp, q_lp, draft_tokens, support=support)
    row = mx.take_along_axis(p_lp, n[:, None, None], axis=1)[:, 0]
    return n, mx.random.categorical(row, axis=-1)


def first_token_counts(rule, p_lp, q_lp, samples: int, seed: int, support=None) -> np.ndarray:
    """Run `rule` on `samples` independent rounds at once; histogram of the first emitted token."""
    mx.random.seed(seed)
    B = samples
    q_b = mx.broadcast_to(q_lp, (B, *q_lp.shape))
    p_b = mx.broadcast_to(p_lp, (B, *p_lp.shape))
    drafts = mx.random.categorical(q_b, axis=-1)
    if support is not None:
        drafts = support[drafts]
    n, nxt = rule(p_b, q_b, drafts, support=support)
    first = mx.where(n > 0, drafts[:, 0], nxt)
    return np.bincount(np.array(first), minlength=p_lp.shape[-1])


# a draft head over 8 of the 12 tokens, in no particular order (as frequency-ranked heads are)
SUPPORT = mx.array([9, 2, 7, 0, 4, 11, 5, 1])


@pytest.mark.parametrize("support", [None, SUPPORT], ids=["full-vocabulary", "subset"])
@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(0.7, top_p=0.9), SamplingParams(1.0, top_k=5)])
def test_verify_preserves_the_target_distribution_and_broken_rule_fails(params, support):
    rng = np.random.default_rng(0)
    V, k = 12, 3
    S = V if support is None else support.size
    p_lp = process_logits(mx.array(rng.normal(size=(k + 1, V)).astype(np.float32) * 1.5), params)
    q_lp = process_logits(mx.array(rng.normal(size=(k, S)).astype(np.float32) * 1.5), params)
    target = np.exp(np.array(p_lp[0]))
    good = first_token_counts(verify, p_lp, q_lp, 40000, seed=1, support=support)
    stat, df = chi2_stat(good, target)
    assert stat < chi2_critical(df), (stat, df)
    bad = first_token_counts(broken_verify, p_lp, q_lp, 40000, seed=1, support=support)
    stat, df = chi2_stat(bad, target)
    assert stat > chi2_critical(df), (stat, df)


def test_draw_follows_the_weights_and_never_picks_a_zero():
    weights = np.array([0.0, 3.0, 0.0, 1.0, 0.5, 0.0, 2.5, 0.0], dtype=np.float32)
    N = 30000
    mx.random.seed(4)
    picks = np.array(draw(mx.broadcast_to(mx.array(weights), (N, weights.size))))
    counts = np.bincount(picks, minlength=weights.size)
    assert counts[weights == 0].sum() == 0
    stat, df = chi2_stat(counts, weights / weights.sum())
    assert stat < chi2_critical(df), (stat, df)
    one_hot = np.zeros((1, 8), np.float32)
    one_hot[0, 6] = 1e-30  # all the weight on one tiny entry
    assert draw(mx.array(one_hot)).item() == 6


def exact_joint(model: Model, prompt: list[int], params: SamplingParams, n: int) -> dict[tuple[int, ...], float]:
    """P(first n tokens) under the target's processed distribution, by enumeration."""
    dist = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for prefix, prob in dist.items():
            if prob < 1e-9:
                continue
            lp = process_logits(model(mx.array([prompt + list(prefix)]))[:, -1], params)
            for t, pt in enumerate(np.exp(np.array(lp[0]))):
                if pt > 0:
                    nxt[prefix + (t,)] = prob * pt
        dist = nxt
    return dist


@pytest.mark.parametrize("params, length, k", [full_only(SamplingParams(1.0), 2, 2), (SamplingParams(0.7, top_p=0.9), 3, 2)])
def test_sampled_speculative_output_has_the_target_distribution(params, length, k):
    """End to end through both models and caches: the first `length` tokens."""
    target, draft = tiny(10, vocab=6, window=None, layers=1), tiny(11, vocab=6, window=None, layers=1)
    stat, df = sampled_chi2(target, draft, params, [1, 2, 3], length, k)
    assert stat < chi2_critical(df), (stat, df)


def sampled_chi2(target, draft, params: SamplingParams, prompt: list[int], length: int, k: int,
                 runs: int = 2500) -> tuple[float, int]:
    """Chi-square of the first `length` speculative tokens (`runs` seeded generations through
    the decoder's rounds) against the target's exact joint distribution."""
    exact = exact_joint(target, prompt, params, length)
    keys = sorted(exact)
    index = {key: i for i, key in enumerate(keys)}
    counts = np.zeros(len(keys))
    for seed in range(runs):
        generation = new_generation(target, draft, params, k, seed)
        out = [generation.prefill(prompt)]
        while len(out) < length:  # rounds of k whatever is left: the first `length` tokens are a sample too
            out += [t for t, _ in generation.round(k)]
        counts[index[tuple(out[:length])]] += 1
    return chi2_stat(counts, np.array([exact[key] for key in keys]))


def test_acceptance_rate_reaches_sum_of_min():
    """Acceptance of a drafted token is sum_x min(p(x), q(x)) (mlx-lm's loop gets sum p*q)."""
    rng = np.random.default_rng(3)
    V = 10
    p_logits = rng.normal(size=(2, V)).astype(np.float32)
    q_logits = p_logits[:1] + 0.5 * rng.normal(size=(1, V)).astype(np.float32)  # a draft that mostly agrees
    p_lp = process_logits(mx.array(p_logits), SamplingParams(1.0))
    q_lp = process_logits(mx.array(q_logits), SamplingParams(1.0))
    p, q = np.exp(np.array(p_lp[0])), np.exp(np.array(q_lp[0]))
    analytic = np.minimum(p, q).sum()
    assert analytic > (p * q).sum() + 0.2
    N = 40000
    mx.random.seed(0)
    drafts = mx.random.categorical(mx.broadcast_to(q_lp, (N, 1, V)), axis=-1)
    n, _ = verify(mx.broadcast_to(p_lp, (N, 2, V)), mx.broadcast_to(q_lp, (N, 1, V)), drafts)
    measured = float(np.array(n).mean())
    assert abs(measured - analytic) < 4 * math.sqrt(analytic * (1 - analytic) / N)


def test_rollback_leaves_caches_as_a_fresh_pass():
    target, draft = TARGET, DRAFTS["half"]
    params = SamplingParams(1.0)
    decoder = new_generation(target, draft, params, k=5, seed=5)
    emitted = [decoder.prefill(PROMPT)]
    rejected_rounds = 0
    while len(emitted) < 6 * WINDOW:
        new = decoder.round(5)
        rejected_rounds += len(new) < 6
        emitted += [t for t, _ in new]
    assert rejected_rounds > 0
    history = PROMPT + emitted[:-1]  # everything before decoder.last
    assert decoder.last == emitted[-1]
    fresh_t = target(mx.array([history + [decoder.last]]))[:, -1]
    cached_t = target(mx.array([[decoder.last]]), decoder.cache)[:, -1]
    assert mx.abs(fresh_t - cached_t).max().item() < 1e-4
    fresh_d = draft(mx.array([history + [decoder.last]]))[:, -1]
    drafter = decoder.drafter.rows[0]
    cached_d = draft(mx.array([drafter.pending + [decoder.last]]), drafter.cache)[:, -1]
    assert mx.abs(fresh_d - cached_d).max().item() < 1e-4


def test_bad_pairs():
    with pytest.raises(InputError, match="num_draft_tokens"):
        tokens(TARGET, PROMPT, 4, draft=DRAFTS["random"], num_draft_tokens=0)
    with pytest.raises(InputError, match="vocabulary size 32 differs"):
        tokens(TARGET, PROMPT, 4, draft=tiny(3, vocab=32))
    with pytest.raises(InputError, match="temperature"):
        tokens(TARGET, PROMPT, 4, draft=DRAFTS["random"], temperature=-1.0)
    with pytest.warns(UserWarning, match="not smaller than the target"):
        tokens(TARGET, PROMPT, 4, draft=tiny(4, layers=3), draft_policy="fixed")


class FixedTimings:
    """A calibration that measures nothing: round times near break-even for a draft
    accepted about half the time, so the draft lengths follow the acceptance estimate."""

    def timings(self, target, draft, k_max, params) -> Timings:
        return Timings({0: 1.0, 1: 1.45, 2: 1.8, 3: 2.1, 4: 2.4})


def test_acceptance_estimate_carries_over_between_unseeded_requests():
    session = Session(TARGET, None, DRAFTS["half"], num_draft_tokens=4, calibration=FixedTimings())
    params = SamplingParams(1.0)
    assert session.policy(params, seed=None).estimate.tested == 1.0  # the prior only
    list(session.stream(PROMPT, max_tokens=24, temperature=1.0))
    carried = session.policy(params, seed=None).estimate
    assert carried.tested > 1.0 and carried.position_tested  # the next unseeded request starts from this
    assert session.policy(SamplingParams(0.7), seed=None).estimate is not carried  # per sampling setting
    assert session.policy(params, seed=3).estimate.tested == 1.0  # a seeded request starts from the prior


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_identical_seeded_requests_give_identical_text_whatever_ran_before(temperature):
    """Adaptive draft lengths that learned from earlier requests would change how many random
    numbers a request draws, and with them its text: a seeded request must not depend on them."""
    session = Session(TARGET, None, DRAFTS["half"], num_draft_tokens=4, calibration=FixedTimings())
    request = dict(max_tokens=40, temperature=temperature, seed=7)
    first = [s.token for s in session.stream(PROMPT, **request)]
    for other in (1.0, 0.0):  # unseeded requests in between teach the session's estimates
        list(session.stream(PROMPT[2:], max_tokens=30, temperature=other))
    rounds = []
    for _ in range(3):
        steps = list(session.stream(PROMPT, **request))
        assert [s.token for s in steps] == first
        rounds.append(dict(steps[-1].stats.k_counts))
    assert rounds[0] == rounds[1] == rounds[2]
    if temperature == 0:  # greedy: the target's own text, whatever the draft lengths
        assert first == tokens(TARGET, PROMPT, 40)[0]
