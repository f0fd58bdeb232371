"""The draft-length cost model: Leviathan et al.'s expectation, the choice of k, calibration cache."""

from __future__ import annotations

import json
import math

import pytest

from mlxspec.sampling import SamplingParams

from mlxspec.costmodel import (MARGIN, AcceptanceEstimate, Timings, best_k, calibrate, expected_tokens, round_times,
                               sampling_kind, tokens_per_second)
from mlxspec.model import Linear, set_weight_first_rows


def test_expected_tokens_matches_the_geometric_series():
    for alpha in (0.0, 0.3, 0.8, 0.99):
        for k in range(0, 8):
            assert expected_tokens(alpha, k) == pytest.approx(sum(alpha**i for i in range(k + 1)))
    assert expected_tokens(1.0, 5) == 6


def test_best_k_weighs_acceptance_against_cost():
    cheap = Timings(draft_step=0.002, target_pass={n: 0.02 + 0.001 * n for n in range(1, 10)})
    assert best_k(0.0, cheap, 8) == 0  # a useless draft: plain decoding
    assert best_k(0.95, cheap, 8) == 8  # a good cheap draft: draft as much as allowed
    k = best_k(0.6, cheap, 8)
    predicted_gain = tokens_per_second(0.6, k, cheap) / tokens_per_second(0.6, 0, cheap)  # model, not a clock
    assert 0 < k < 8 and predicted_gain > 1
    # on Apple GPUs a verify pass grows with k; an expensive draft never pays, even at alpha = 1
    costly = Timings(draft_step=0.02, target_pass={n: 0.02 * (1 + 0.3 * (n - 1)) for n in range(1, 10)})
    assert best_k(1.0, costly, 8) == 0


def test_timings_interpolate_between_measurements():
    t = Timings(0.001, {1: 1.0, 3: 3.0})
    assert t.verify(2) == pytest.approx(2.0)
    assert t.verify(6) == pytest.approx(6.0)


def test_acceptance_estimate_tracks_rounds():
    est = AcceptanceEstimate(prior=0.5, weight=1.0, decay=1.0)
    est.update(accepted=4, drafted=4)  # all accepted: 4 tested
    est.update(accepted=1, drafted=4)  # first rejection at position 2: 2 tested
    assert est.alpha == pytest.approx((0.5 + 5) / (1 + 6))


def test_calibration_is_measured_once_and_cached(tmp_path, monkeypatch):
    from test_speculative import DRAFTS, TARGET

    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path))
    try:
        first = calibrate(TARGET, DRAFTS["random"], 3)
        assert sorted(first.target_pass) == [1, 2, 3, 4] and first.draft_step > 0
        assert sorted(first.rounds) == [0, 1, 2, 3] and all(t > 0 for t in first.rounds.values())
        stored = json.loads((tmp_path / "calibration.json").read_text())
        assert len(stored) == 1
        key = next(iter(stored))
        assert sorted(stored[key]["rounds"]) == ["greedy"]  # the default: greedy rounds
        assert 0 <= first.weight_first_rows <= 4 and stored[key]["weight_first_rows"] == first.weight_first_rows
        stored[key]["draft_step"] = 123.0  # a cached value is read back, not re-measured
        stored[key]["weight_first_rows"] = 3  # ... and the multiplication order it found is set again
        (tmp_path / "calibration.json").write_text(json.dumps(stored))
        set_weight_first_rows(TARGET, 0)
        again = calibrate(TARGET, DRAFTS["random"], 3)
        assert again.draft_step == 123.0 and again.rounds == first.rounds and again.weight_first_rows == 3
        assert {m.weight_first_rows for m in TARGET.modules() if isinstance(m, Linear)} == {3}
        # another kind of sampling: only its rounds are timed, into the same entry
        nucleus = calibrate(TARGET, DRAFTS["random"], 3, SamplingParams(0.7, top_p=0.9))
        assert nucleus.draft_step == 123.0 and sorted(nucleus.rounds) == [0, 1, 2, 3]
        stored = json.loads((tmp_path / "calibration.json").read_text())
        assert len(stored) == 1 and sorted(stored[key]["rounds"]) == ["greedy", "top-p"]
        assert calibrate(TARGET, DRAFTS["random"], 3, SamplingParams(0.3, top_p=0.5)).rounds == nucleus.rounds
    finally:
        set_weight_first_rows(TARGET, 0)  # TARGET is shared with other tests


def test_sampling_params_name_their_kind():
    assert sampling_kind(SamplingParams(0.0, top_p=0.9)) == "greedy"
    assert sampling_kind(SamplingParams(1.0)) == "none"
    assert sampling_kind(SamplingParams(0.7, top_p=0.9)) == "top-p"
    assert sampling_kind(SamplingParams(0.7, top_k=40, top_p=0.9)) == "top-k+top-p"


def test_measured_rounds_replace_the_sum_of_the_passes():
    """A round costs more than its passes (graphs that cannot overlap, verification, the
    draft catching up, drawing at T > 0); once measured, the model uses the measured round,
    and a round that dear makes drafting pay less (here: not at all) than the passes promise."""
    parts = Timings(0.006, {1: 0.068, 2: 0.080, 3: 0.091})
    assert parts.round(1) == pytest.approx(0.006 + 0.080) and parts.round(0) == pytest.approx(0.068)
    measured = Timings(0.006, {1: 0.068, 2: 0.080, 3: 0.091}, rounds={0: 0.069, 1: 0.098, 2: 0.120})
    assert measured.round(1) == 0.098 and measured.round(0) == 0.069
    alpha = [0.42, 0.2]
    assert best_k(alpha, parts, 2) == 1
    assert best_k(alpha, measured, 2) == 0


def test_round_times_run_the_loop_without_touching_real_requests():
    """Rounds are timed by the loop itself, for k = 0..k_max, greedy or sampled; the
    process-wide acceptance estimate that real requests share is left alone."""
    from mlxspec.speculative import acceptance_memory
    from test_speculative import DRAFTS, TARGET

    for params in (SamplingParams(), SamplingParams(1.0, top_k=5)):
        before = vars(acceptance_memory(TARGET, DRAFTS["random"], params)).copy()
        times = round_times(TARGET, DRAFTS["random"], 3, params, repeats=2, context=8)
        assert sorted(times) == [0, 1, 2, 3] and all(t > 0 for t in times.values())
        assert vars(acceptance_memory(TARGET, DRAFTS["random"], params)) == before


def test_per_position_acceptance_keeps_a_weak_second_draft_from_being_chosen():
    est = AcceptanceEstimate(prior=0.5, weight=1.0, decay=1.0)
    for _ in range(30):  # the first draft passes 60% of the time, the second hardly ever
        for accepted in (1, 1, 1, 0, 0):
            est.update(accepted=accepted, drafted=2)
    first, second, third = est.per_position(3)
    assert first == pytest.approx((90 + 0.5) / (150 + 1))  # accepted in 90 of 150 rounds, plus the prior
    assert second < 0.05 and third < second + 0.05  # untested position 3 leans on position 2
    assert expected_tokens([first, second], 2) == pytest.approx(1 + first + first * second)
    timings = Timings(0.006, {1: 0.068, 2: 0.080, 3: 0.091, 4: 0.102, 5: 0.105})
    assert best_k(est.per_position(4), timings, 4) == 1


def test_probes_cost_at_most_the_exploration_budget():
    """In plain decoding a k=1 probe comes after a run sized so that probing loses at most
    `explore` of the time: rarely for a useless draft, often near break-even."""
    from mlxspec.sampling import SamplingParams
    from mlxspec.speculative import SpeculativeDecoder
    from test_speculative import DRAFTS, TARGET

    timings = Timings(0.006, {1: 0.068, 2: 0.080, 3: 0.091})
    decoder = SpeculativeDecoder(TARGET, DRAFTS["random"], SamplingParams(), k_max=2, timings=timings, explore=0.01)

    def interval(alpha: float) -> int:
        decoder.alpha = AcceptanceEstimate(prior=alpha, weight=1.0)
        return decoder.probe_interval()

    useless, marginal = interval(0.0), interval(0.28)
    assert useless == math.ceil((0.086 - 0.068 / (1 + MARGIN)) / (0.01 * 0.068))  # 32 plain steps per probe
    assert marginal <= 6 and interval(0.4) == 1  # drafting would pay: no reason to wait
    decoder.alpha = AcceptanceEstimate(prior=0.0, weight=1.0)
    decoder.ran_plain = True
    assert decoder.choose_k(100) == 1  # the probe after a plain run
    assert decoder.choose_k(100) == 0 and decoder.plain_run == useless
