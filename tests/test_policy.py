"""The draft-length policies: Leviathan et al.'s expectation, the choice of k, the acceptance
estimate, probing, and the fixed and heuristic schedules. Pure: no model runs here."""

from __future__ import annotations

import math

import pytest

from mlxspec.engine.policy import (MARGIN, AcceptanceEstimate, CostModel, FixedK, Heuristic, Plain, Timings, best_k,
                                   expected_tokens, tokens_per_second)

# a round drafting k tokens: a target pass over k+1 tokens and k draft steps
CHEAP = Timings({k: 0.02 + 0.001 * (k + 1) + 0.002 * k for k in range(9)})


def test_expected_tokens_matches_the_geometric_series():
    for alpha in (0.0, 0.3, 0.8, 0.99):
        for k in range(0, 8):
            assert expected_tokens(alpha, k) == pytest.approx(sum(alpha**i for i in range(k + 1)))
    assert expected_tokens(1.0, 5) == 6


def test_best_k_weighs_acceptance_against_cost():
    assert best_k(0.0, CHEAP, 8) == 0  # a useless draft: plain decoding
    assert best_k(0.95, CHEAP, 8) == 8  # a good cheap draft: draft as much as allowed
    k = best_k(0.6, CHEAP, 8)
    predicted_gain = tokens_per_second(0.6, k, CHEAP) / tokens_per_second(0.6, 0, CHEAP)  # model, not a clock
    assert 0 < k < 8 and predicted_gain > 1
    # on Apple GPUs a verify pass grows with k; an expensive draft never pays, even at alpha = 1
    costly = Timings({k: 0.02 * (1 + 0.3 * k) + 0.02 * k for k in range(9)})
    assert best_k(1.0, costly, 8) == 0


def test_round_times_beyond_the_measured_extrapolate_linearly():
    t = Timings({0: 1.0, 1: 1.5, 2: 1.75})
    assert t.round(2) == 1.75 and t.round(4) == pytest.approx(2.25)


def test_a_dear_round_makes_drafting_pay_less():
    """What the calibration measures is what counts: a round that costs more than its
    passes promise (here 0.098 s instead of 0.086 s) makes k = 1 lose."""
    alpha = [0.42, 0.2]
    assert best_k(alpha, Timings({0: 0.068, 1: 0.086, 2: 0.103}), 2) == 1
    assert best_k(alpha, Timings({0: 0.069, 1: 0.098, 2: 0.120}), 2) == 0


def test_acceptance_estimate_tracks_rounds():
    est = AcceptanceEstimate(prior=0.5, weight=1.0, decay=1.0)
    est.update(accepted=4, drafted=4)  # all accepted: 4 tested
    est.update(accepted=1, drafted=4)  # first rejection at position 2: 2 tested
    assert est.alpha == pytest.approx((0.5 + 5) / (1 + 6))


def test_per_position_acceptance_keeps_a_weak_second_draft_from_being_chosen():
    est = AcceptanceEstimate(prior=0.5, weight=1.0, decay=1.0)
    for _ in range(30):  # the first draft passes 60% of the time, the second hardly ever
        for accepted in (1, 1, 1, 0, 0):
            est.update(accepted=accepted, drafted=2)
    first, second, third = est.per_position(3)
    assert first == pytest.approx((90 + 0.5) / (150 + 1))  # accepted in 90 of 150 rounds, plus the prior
    assert second < 0.05 and third < second + 0.05  # untested position 3 leans on position 2
    assert expected_tokens([first, second], 2) == pytest.approx(1 + first + first * second)
    timings = Timings({0: 0.068, 1: 0.086, 2: 0.104, 3: 0.121, 4: 0.129})
    assert best_k(est.per_position(4), timings, 4) == 1


def test_probes_cost_at_most_the_exploration_budget():
    """In plain decoding a k=1 probe comes after a run sized so that probing loses at most
    `explore` of the time: rarely for a useless draft, often near break-even."""
    timings = Timings({0: 0.068, 1: 0.086, 2: 0.097})

    def interval(alpha: float) -> int:
        return CostModel(timings, AcceptanceEstimate(prior=alpha, weight=1.0), k_max=2, explore=0.01).probe_interval()

    useless, marginal = interval(0.0), interval(0.28)
    assert useless == math.ceil((0.086 - 0.068 / (1 + MARGIN)) / (0.01 * 0.068))  # 32 plain steps per probe
    assert marginal <= 6 and interval(0.4) == 1  # drafting would pay: no reason to wait
    estimate = AcceptanceEstimate(prior=0.0, weight=1.0)
    policy = CostModel(timings, estimate, k_max=2, explore=0.01)
    assert policy.next_k(100) == 0 and policy.plain_steps(100) == useless
    for _ in range(useless - 5):
        policy.observe(0, 0)  # a request ends after these plain steps ...
    again = CostModel(timings, estimate, k_max=2, explore=0.01)  # ... the next one shares the estimate
    assert again.next_k(100) == 0 and again.plain_steps(100) == 5  # the spacing counts across requests
    for _ in range(5):
        again.observe(0, 0)
    assert again.next_k(100) == 1  # the probe
    again.observe(1, 0)
    assert again.next_k(100) == 0 and again.plain_steps(10) == 10  # never past the budget


def test_a_probe_is_skipped_when_even_perfect_acceptance_loses():
    policy = CostModel(Timings({0: 1.0, 1: 2.5}), AcceptanceEstimate(prior=0.0), k_max=1)
    assert policy.plain_steps(50) == 50  # one pipelined run to the end of the budget
    for _ in range(600):
        policy.observe(0, 0)
    assert policy.next_k(50) == 0


def test_every_policy_stays_within_the_budget():
    policies = [Plain(), FixedK(4), Heuristic(6), CostModel(CHEAP, AcceptanceEstimate(prior=0.99), k_max=5)]
    for policy in policies:
        for budget in (1, 2, 3, 50):
            k = policy.next_k(budget)
            assert 0 <= k <= min(policy.k_max, budget - 1)
            if k == 0:
                assert 1 <= policy.plain_steps(budget) <= budget


def test_the_heuristic_schedule_grows_on_full_acceptance_and_shrinks_otherwise():
    policy = Heuristic(8)
    assert policy.next_k(100) == 5
    policy.observe(5, 5)
    assert policy.next_k(100) == 7
    policy.observe(7, 7)
    assert policy.next_k(100) == 8  # capped at k_max
    policy.observe(8, 2)
    assert policy.next_k(100) == 7
    for _ in range(10):
        policy.observe(policy.next_k(100), 0)
    assert policy.next_k(100) == 1  # never below 1
