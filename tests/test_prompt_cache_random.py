"""The prompt cache gives exactly what a fresh prefill gives: 200 random request sequences
(seeded) through long-lived sessions, on targets whose sliding window is shorter than the
prompts (rolling caches that have wrapped) and one without a window, with every draft kind
or none, one request at a time, as one batch, or joining a running batch between its
steps. Each sequence continues earlier conversations, branches from their prefixes, or
starts afresh, so the cache is taken, rolled back and put back in every way; every greedy
output must equal a fresh session's plain decoding of the same prompt."""

from __future__ import annotations

import random

import pytest

from mlxspec import Session
from mlxspec.drafts import LookupAndModel
from test_speculative import FixedTimings, perturbed, tiny

SEQUENCES = 200


def make_setups():
    """(target, draft) pairs: windows of 5 and 6 (prompts run to ~40 tokens), none, and a
    feature draft on a one-block target."""
    from test_feature_draft import feature_draft, one_block_target

    windowed, full = tiny(40, window=6), tiny(41, window=None)
    feature_target = one_block_target(42, window=5)
    return [
        (windowed, None), (windowed, "ngram"), (windowed, perturbed(windowed, 0.05, 43)),
        (windowed, LookupAndModel(perturbed(windowed, 0.05, 44), min_match=2)),
        (full, None), (full, perturbed(full, 0.05, 45)), (full, "ngram"),
        (feature_target, feature_draft(feature_target, 46, oracle=True)),
    ]


class Oracle:
    """Greedy plain decoding from a fresh prefill (no prompt cache, no draft), memoised."""

    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}
        self.memo: dict[tuple, list[int]] = {}

    def __call__(self, target, prompt: list[int], max_tokens: int) -> list[int]:
        key = (id(target), tuple(prompt), max_tokens)
        if key not in self.memo:
            session = self.sessions.setdefault(id(target), Session(target, None, prompt_cache_entries=0))
            self.memo[key] = [s.token for s in session.stream(prompt, max_tokens=max_tokens, speculative=False)]
        return self.memo[key]


def next_prompt(rng: random.Random, texts: list[list[int]]) -> list[int]:
    """Continue an earlier text, branch from one of its prefixes, or start afresh."""
    fresh = [rng.randrange(64) for _ in range(rng.randint(1, 12))]
    if not texts or rng.random() < 0.2:
        return fresh if rng.random() < 0.5 else [rng.randrange(64) for _ in range(rng.randint(13, 30))]
    text = rng.choice(texts)
    if rng.random() < 0.6:  # the next turn: the whole text so far, and more
        return (text + fresh)[-48:]
    return text[: rng.randint(1, len(text))] + fresh


def run_sequence(rng: random.Random, session: Session, texts: list[list[int]]) -> list[tuple[list[int], int, list[int]]]:
    """A few requests through `session`: alone, as one batch, or joining a running batch;
    returns (prompt, max_tokens, tokens) for each."""
    mode = rng.choice(["alone", "batch", "joining"])
    prompts = [next_prompt(rng, texts) for _ in range(rng.randint(1, 3))]
    budgets = [rng.randint(1, 10) for _ in prompts]
    if mode == "alone":
        outputs = [[s.token for s in session.stream(p, max_tokens=n)] for p, n in zip(prompts, budgets)]
    elif mode == "batch":
        outputs = [c.tokens for c in session.batch_generate(prompts, max_tokens=max(budgets))]
        budgets = [max(budgets)] * len(prompts)
    else:
        outputs = [[] for _ in prompts]
        batch = session.open_batch()
        for out, prompt, budget in zip(outputs, prompts, budgets):
            batch.add(session.row(session.request(prompt, max_tokens=budget), lambda step, out=out: out.append(step.token)))
            for _ in range(rng.randint(0, 3)):
                batch.step()
        batch.run()
    for prompt, out in zip(prompts, outputs):
        texts.append(prompt + out)
    return list(zip(prompts, budgets, outputs))


def test_random_request_sequences_through_the_prompt_cache_equal_fresh_prefills():
    rng = random.Random(2029)
    oracle = Oracle()
    setups = make_setups()
    sessions = [Session(target, None, draft, num_draft_tokens=rng.randint(1, 4), calibration=FixedTimings(),
                        draft_policy=rng.choice(["fixed", "cost"]), prompt_cache_entries=rng.randint(1, 4))
                for target, draft in setups]
    texts: list[list[list[int]]] = [[] for _ in setups]
    cached = 0
    for sequence in range(SEQUENCES):
        i = rng.randrange(len(setups))
        for prompt, budget, tokens in run_sequence(rng, sessions[i], texts[i]):
            assert tokens == oracle(setups[i][0], prompt, budget), (sequence, i, prompt, budget)
        texts[i] = texts[i][-6:]
        cached += len(sessions[i].prompt_cache)
    assert cached > SEQUENCES  # the cache held entries between sequences
