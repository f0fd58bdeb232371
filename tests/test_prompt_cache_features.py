"""The prompt cache with a feature draft: an entry keeps the target's hidden states beside
its cache, so the next turn of a conversation prefills only its new tokens, and the draft
reads exactly the pairs it would have read after a full prefill: the text and every
round's acceptance equal a session's without a prompt cache, alone and as batch rows,
past the sliding window too."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlxspec import Session
from test_kv_decoding import PROMPT, pair as kinds
from mlxspec.engine import Timings
from test_speculative import FixedTimings

OPTIONS = dict(num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed")


def pair(kind: str, window: int | None):
    """The target and a feature draft that reads the feature as well as the token (so a
    misaligned feature changes what it proposes)."""
    target, draft = kinds(kind, window)
    d = target.args.hidden_size
    draft.fc.weight = mx.concatenate([mx.eye(d), 0.3 * mx.eye(d)], axis=1)
    return target, draft


def run(session: Session, prompts: list[list[int]], batched: bool, **values) -> list[tuple[list[int], object]]:
    if batched:
        return [(c.tokens, c.stats) for c in session.batch_generate(prompts, max_tokens=20, **values)]
    return [([st.token for st in steps], steps[-1].stats)
            for steps in (list(session.stream(p, max_tokens=20, **values)) for p in prompts)]


@pytest.mark.parametrize("window", [8, None])
@pytest.mark.parametrize("batched", [False, True])
def test_the_next_turn_reuses_the_cache_and_drafts_as_after_a_full_prefill(batched, window):
    target, draft = pair("feature", window)
    session, fresh = Session(target, None, draft, **OPTIONS), Session(target, None, draft, prompt_cache_entries=0,
                                                                      **OPTIONS)
    first = [PROMPT, [9, 8, 7, 6]]
    done = run(session, first, batched)
    second = [p + tokens + [11, 12] for p, (tokens, _) in zip(first, done)]
    again, expected = run(session, second, batched), run(fresh, second, batched)
    assert all(stats.prompt_cached_tokens >= len(p) for (_, stats), p in zip(again, first))
    assert [t for t, _ in again] == [t for t, _ in expected]
    assert [(s.accepted, s.drafted) for _, s in again] == [(s.accepted, s.drafted) for _, s in expected]
    assert sum(s.accepted for _, s in again) > 0


def test_sampled_text_with_a_seed_is_the_same_with_and_without_the_prompt_cache():
    target, draft = pair("feature", None)
    session, fresh = Session(target, None, draft, **OPTIONS), Session(target, None, draft, prompt_cache_entries=0,
                                                                      **OPTIONS)
    done = run(session, [PROMPT], False, temperature=1.0, seed=4)
    second = [PROMPT + done[0][0] + [5]]
    again = run(session, second, False, temperature=1.0, seed=5)
    assert again[0][1].prompt_cached_tokens > len(PROMPT)
    assert again[0][0] == run(fresh, second, False, temperature=1.0, seed=5)[0][0]


def test_a_plain_request_leaves_no_hidden_states_so_a_drafting_one_prefills_all():
    target, draft = pair("feature", None)
    session = Session(target, None, draft, **OPTIONS)
    plain = run(session, [PROMPT], False, speculative=False)
    nxt = run(session, [PROMPT + plain[0][0] + [5]], False)
    assert nxt[0][1].prompt_cached_tokens == 0
    assert run(session, [PROMPT + plain[0][0] + [5, 6]], False, speculative=False)[0][1].prompt_cached_tokens > 0


class CostlyDrafts:
    """Round times under which drafting never pays: the cost policy decodes plainly, with
    its pipelined steps (one token fed ahead of the ones read back)."""

    def timings(self, target, draft, k_max, params, **kv) -> Timings:
        return Timings({0: 1.0, 1: 9.0, 2: 9.5, 3: 10.0})


def test_an_answer_decoded_in_pipelined_plain_steps_is_reused_too():
    """Read only part of a plainly decoded answer (as at an end-of-sequence token): the step
    queued ahead fed one more token than the draft was handed; the entry still keeps them."""
    target, draft = pair("feature", None)
    session = Session(target, None, draft, num_draft_tokens=3, calibration=CostlyDrafts())
    fresh = Session(target, None, draft, num_draft_tokens=3, calibration=CostlyDrafts(), prompt_cache_entries=0)
    stream, tokens = session.stream(PROMPT, max_tokens=30), []
    for step in stream:
        tokens.append(step.token)
        if len(tokens) == 10:
            break
    stream.close()
    assert step.stats.drafted == 0  # plain steps only
    second = [PROMPT + tokens + [5, 6]]
    again = run(session, second, False)
    assert again[0][1].prompt_cached_tokens >= len(PROMPT) + len(tokens) - 1
    assert again[0][0] == run(fresh, second, False)[0][0]
