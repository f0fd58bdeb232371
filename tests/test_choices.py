"""Several choices for one request (`n`): the prompt is prefilled once and every choice starts
from it; a seeded request is reproducible and its choice 0 is the n=1 answer (with a draft
speculating in the batch too); sampled choices differ, greedy ones are equal; n is checked
in one place; and `mlxspec generate --n` prints every choice (or a JSON list)."""

from __future__ import annotations

import json

import pytest

from mlxspec import Session
from mlxspec.arguments import run
from mlxspec.engine.batch import Batch, make_row
from mlxspec.engine.choices import MAX_CHOICES, choice_seed
from mlxspec.errors import InputError
from test_speculative import FixedTimings, perturbed, tiny

PROMPT = list(range(3, 15))
pytestmark = pytest.mark.filterwarnings("ignore:the draft .* is not smaller")


def session_with(draft: str | None, seed: int = 40) -> Session:
    from test_feature_draft import feature_draft, one_block_target

    target = one_block_target(seed, window=None) if draft == "feature" else tiny(seed, window=None)
    kind = {"model": lambda: perturbed(target, 0.05, seed + 1), "ngram": lambda: "ngram", None: lambda: None,
            "feature": lambda: feature_draft(target, seed + 1, oracle=True)}[draft]()
    return Session(target, None, kind, num_draft_tokens=3, calibration=FixedTimings(), draft_policy="fixed")


def alone(session: Session, prompt: list[int], **options) -> list[int]:
    return [s.token for s in session.stream(prompt, **options)]


@pytest.mark.parametrize("draft", [None, "model", "ngram", "feature"])
def test_a_seeded_requests_choice_0_is_its_n1_answer_and_the_choices_reproduce(draft):
    session = session_with(draft)
    options = dict(max_tokens=24, temperature=1.0, seed=11)
    first = session.choices(PROMPT, n=4, **options)
    assert len(first) == 4
    assert [c.tokens for c in session.choices(PROMPT, n=4, **options)] == [c.tokens for c in first]
    for i, choice in enumerate(first):  # each choice is the request (n=1) seeded as derived; choice 0: the seed
        assert choice.tokens == session.choices(PROMPT, **{**options, "seed": choice_seed(11, i)})[0].tokens
    if draft != "ngram":  # (prompt lookup drafts a batch row otherwise than a single stream: other draws)
        assert first[0].tokens == alone(session, PROMPT, prompt_cache=False, **options)
    if draft is not None:
        assert sum(c.stats.drafted for c in first) > 0  # speculation ran inside the batch


def test_sampled_choices_differ_and_greedy_ones_are_equal():
    session = session_with(None)
    for seed in (1, 2, 3):
        texts = {tuple(c.tokens) for c in session.choices(PROMPT, n=4, max_tokens=16, temperature=1.0, seed=seed)}
        assert len(texts) > 1, seed
    unseeded = session.choices(PROMPT, n=4, max_tokens=16, temperature=1.0)
    assert len({tuple(c.tokens) for c in unseeded}) > 1  # random streams of their own
    greedy = session.choices(PROMPT, n=3, max_tokens=16)
    assert [c.tokens for c in greedy] == [alone(session, PROMPT, max_tokens=16)] * 3


@pytest.mark.parametrize("draft", ["model", "feature"])
def test_the_prompt_is_prefilled_once_for_every_choice(draft):
    """A feature draft (which takes nothing from the prompt cache) shares the prefill too."""
    session = session_with(draft)
    session.prompt_cache.clear()
    request = session.request(PROMPT, n=5, max_tokens=8, temperature=1.0)
    outputs: list[list[int]] = [[] for _ in range(5)]
    batch = Batch(session)
    batch.add(*(make_row(session, request, lambda step, out=outputs[j]: out.append(step), j) for j in range(5)))
    assert batch.prefilled == len(PROMPT)  # one prefill, not five
    batch.run()
    cached = [out[-1].stats.prompt_cached_tokens for out in outputs]
    assert cached == [0] + [len(PROMPT)] * 4
    assert all(len(out) == 8 for out in outputs)
    assert len(session.prompt_cache) == 1  # only the first choice keeps its cache


def test_batch_generate_gives_each_prompt_its_choices_in_order():
    session = session_with("ngram")
    prompts = [PROMPT, [7, 8, 9, 7, 8]]
    options = dict(max_tokens=12, temperature=1.0, seed=5)
    together = session.batch_generate(prompts, n=3, **options)
    assert len(together) == 6
    for i, prompt in enumerate(prompts):
        assert [c.tokens for c in together[3 * i: 3 * i + 3]] == [c.tokens for c in session.choices(prompt, n=3,
                                                                                                      **options)]


@pytest.mark.parametrize("n", [0, MAX_CHOICES + 1, "3", 2.5, True, None])
def test_a_bad_n_is_one_message(n):
    session = session_with(None)
    with pytest.raises(InputError, match=rf"^n must be an integer in 1\.\.{MAX_CHOICES}, got "):
        session.choices(PROMPT, n=n)


def test_a_stream_is_one_choice():
    session = session_with(None)
    with pytest.raises(InputError, match="Session.choices"):
        session.generate(PROMPT, n=2)
    assert len(session.choices(PROMPT, max_tokens=3)) == 1  # n defaults to 1


def test_choice_seeds_are_the_seed_then_derived_ones():
    assert choice_seed(7, 0) == 7 and choice_seed(None, 3) is None
    derived = [choice_seed(7, i) for i in range(1, MAX_CHOICES)]
    assert len(set(derived) | {7}) == MAX_CHOICES and all(0 <= s < 2**64 for s in derived)
    assert derived == [choice_seed(7, i) for i in range(1, MAX_CHOICES)] and choice_seed(8, 1) != derived[0]


def test_generate_prints_every_choice_with_a_header_or_a_json_list(hf_full_dir, capsys):
    argv = ["generate", "--model", str(hf_full_dir), "-p", "Once upon a time", "-n", "6", "--temperature", "1",
            "--seed", "3", "--n", "3"]
    assert run(cli_app(), argv) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("--- choice")] == \
        [f"--- choice {i} ---" for i in range(3)]
    assert run(cli_app(), [*argv, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["index"] for c in listed] == [0, 1, 2] and all(c["generation_tokens"] == 6 for c in listed)
    assert all(f"--- choice {i} ---\n{c['text']}\n" in out for i, c in enumerate(listed))  # the same text both ways
    assert run(cli_app(), [*argv[:-1], "17"]) != 0
    assert capsys.readouterr().err.strip().splitlines() == [f"error: n must be an integer in 1..{MAX_CHOICES}, got 17"]


def cli_app():
    from mlxspec import cli

    return cli.app
