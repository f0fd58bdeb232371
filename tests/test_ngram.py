"""Prompt lookup (n-gram drafting): the index finds the newest earlier occurrence; greedy
output == plain greedy output token for token, for fixed, adaptive and heuristic draft
lengths; sampled output follows the target's distribution (a draft that misstates its
point mass fails the same test); bad settings get one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlxspec import Session
from mlxspec.drafts import NGramDraft, NGramDrafter, one_row
from mlxspec.drafts.ngram import NGramIndex, match_key, point_mass
from mlxspec.engine import FixedK, Generation, RandomKeys, Timings
from mlxspec.engine.sampling import SamplingParams
from mlxspec.errors import InputError
from full_run import full_only
from test_speculative import WINDOW, chi2_critical, chi2_stat, exact_joint, tiny, tokens

TARGET = tiny(0)
# a prompt that repeats itself: lookup has matches of every length from the start
PROMPT = [5, 9, 3, 7, 5, 9, 3, 8, 1, 5, 9, 3, 7, 2]


def test_index_finds_the_newest_earlier_occurrence_of_the_longest_suffix():
    index = NGramIndex(3)
    index.append([1, 2, 3, 9, 1, 2, 4, 7, 2, 3, 5, 1, 2])
    end, length = index.lookup(3, 1)  # suffix "1 2": newest earlier occurrence ends at 6
    assert (end, length) == (6, 2) and index.tokens[end] == 4
    index.append([4])  # "1 2 4": the 3-gram at 4..6 matches, and runs back no further
    end, length = index.lookup(3, 1)
    assert index.tokens[end] == 7 and length == 3
    assert index.lookup(3, 3) == (end, 3)
    fresh = NGramIndex(2)
    fresh.append([1, 2, 3])
    assert fresh.lookup(2, 1) == (-1, 0)  # the suffix itself is never its own match


def test_match_length_runs_back_past_n_and_names_the_estimate():
    index = NGramIndex(2)
    text = list(range(10, 30))
    index.append(text + [99] + text[:12])
    end, length = index.lookup(2, 1)
    assert index.tokens[end] == text[12] and length == 12
    assert match_key(1) == "lookup:1" and match_key(12) == "lookup:12" and match_key(40) == "lookup:16+"


def test_drafter_proposes_the_continuation_and_keeps_the_verified_text():
    drafter = NGramDrafter(NGramDraft(max_ngram=2))
    drafter.extend([4, 5, 6, 7, 8, 4])
    assert drafter.outlook(5)[:2] == ("lookup:2", 5)  # 6 7 8 4 5 followed the earlier "4 5"
    proposal = drafter.propose(5, 3, pick=None)
    assert proposal.tokens.tolist() == [[6, 7, 8]] and proposal.support.tolist() == [6, 7, 8]
    drafter.settle(1, [6, 7, 8])  # 5 and 6 verified; the target's correction comes next as `last`
    assert drafter.index.tokens == [4, 5, 6, 7, 8, 4, 5, 6]
    assert drafter.outlook(1)[:2] == ("lookup:none", 0)
    assert drafter.propose(1, 3, pick=None).tokens.shape == (1, 0)


def test_point_mass_puts_all_of_q_on_the_proposed_token():
    q = np.exp(np.array(point_mass([7, 7, 2]).logprobs[0]))
    assert np.array_equal(q, np.eye(3))


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_greedy_lookup_equals_greedy_plain_with_fixed_k(k):
    expected, _ = tokens(TARGET, PROMPT, 60)
    assert len(PROMPT) + 60 > 6 * WINDOW
    got, stats = tokens(TARGET, PROMPT, 60, draft="ngram", num_draft_tokens=k, draft_policy="fixed")
    assert got == expected
    assert stats.accepted > 0 and stats.drafted > stats.accepted  # both outcomes happened


class CheapRounds:
    """Round times where a verified token costs little: drafting pays at modest acceptance."""

    def timings(self, target, draft, k_max, params) -> Timings:
        return Timings({k: 1.0 + 0.05 * k for k in range(k_max + 1)})


class DearRounds:
    """Round times where drafting pays only for a match that is nearly always accepted."""

    def timings(self, target, draft, k_max, params) -> Timings:
        return Timings({k: 1.0 + 0.5 * k for k in range(k_max + 1)})


@pytest.mark.parametrize("calibration", [CheapRounds(), DearRounds()], ids=["cheap", "dear"])
@pytest.mark.parametrize("policy", ["cost", "heuristic"])
def test_greedy_lookup_equals_plain_when_plain_steps_and_rounds_alternate(policy, calibration):
    expected, _ = tokens(TARGET, PROMPT, 60)
    session = Session(TARGET, None, NGramDraft(max_ngram=4, min_ngram=1), num_draft_tokens=6,
                      draft_policy=policy, calibration=calibration)
    for _ in range(2):  # the second request starts from what the first learned
        steps = list(session.stream(PROMPT, max_tokens=60))
        assert [s.token for s in steps] == expected
    counts = steps[-1].stats.k_counts
    assert counts.get(0, 0) > 0 and sum(n for k, n in counts.items() if k) > 0, counts


def lookup_chi2(target, drafter_factory, params: SamplingParams, prompt: list[int], length: int, k: int,
                runs: int = 2500) -> tuple[float, int]:
    """Chi-square of the first `length` tokens of `runs` seeded generations drafting with
    prompt lookup against the target's exact joint distribution."""
    exact = exact_joint(target, prompt, params, length)
    keys = sorted(exact)
    index = {key: i for i, key in enumerate(keys)}
    counts = np.zeros(len(keys))
    for seed in range(runs):
        generation = Generation(target, one_row(drafter_factory()), FixedK(k), params, RandomKeys(seed), 64)
        out = [generation.prefill(prompt)]
        while len(out) < length:
            out += [t for t, _ in generation.round(k)]
        counts[index[tuple(out[:length])]] += 1
    return chi2_stat(counts, np.array([exact[key] for key in keys]))


class HalfSureDrafter(NGramDrafter):
    """The mistake to catch: claiming q(x) = 1/2 for a proposed token that was certain."""

    def propose(self, last, k, pick):
        proposal = super().propose(last, k, pick)
        return proposal._replace(logprobs=proposal.logprobs + math.log(0.5))


# tokens 0..5, chosen so that after the first sampled token lookup usually has a match
# whose first draft the target accepts with a chance near a half (where a wrong q shows most)
SMALL_PROMPT = [2, 0, 5, 1, 2, 0]


@pytest.mark.parametrize("params", [SamplingParams(1.0), full_only(SamplingParams(0.8, top_p=0.9))], ids=["T=1", "top-p"])
def test_sampled_lookup_has_the_target_distribution_and_a_misstated_q_fails(params):
    target = tiny(10, vocab=6, window=None, layers=1)
    draft = NGramDraft(max_ngram=2)
    stat, df = lookup_chi2(target, lambda: NGramDrafter(draft), params, SMALL_PROMPT, 3, 2)
    assert stat < chi2_critical(df), (stat, df)
    stat, df = lookup_chi2(target, lambda: HalfSureDrafter(draft), params, SMALL_PROMPT, 3, 2)
    assert stat > chi2_critical(df), (stat, df)


def test_bad_lookup_settings_get_one_line():
    for bad, match in [(dict(max_ngram=0), "max_ngram"), (dict(min_ngram=3, max_ngram=2), "min_ngram 3 > max_ngram 2"),
                       (dict(max_ngram=2.5), "integer"), (dict(min_ngram=True), "integer")]:
        with pytest.raises(InputError, match=match):
            NGramDraft(**bad)
    with pytest.raises(InputError, match="ngram"):
        Session(TARGET, None, "lookup")


def test_lookup_in_front_of_a_draft_model_equals_plain_and_uses_both(monkeypatch):
    from mlxspec.drafts import LookupAndModel, LookupAndModelDrafter
    from test_speculative import DRAFTS

    used = []
    propose = LookupAndModelDrafter.propose

    def counted(self, last, k, pick):
        used.append(type(self.chosen).__name__)
        return propose(self, last, k, pick)

    monkeypatch.setattr(LookupAndModelDrafter, "propose", counted)
    expected, _ = tokens(TARGET, PROMPT, 60)
    draft = LookupAndModel(DRAFTS["half"], NGramDraft(max_ngram=3), min_match=2)
    for policy in ("fixed", "cost"):
        session = Session(TARGET, None, draft, num_draft_tokens=4, draft_policy=policy, calibration=CheapRounds())
        assert [s.token for s in session.stream(PROMPT, max_tokens=60)] == expected
    assert {"NGramDrafter", "ModelDrafter"} <= set(used), used
