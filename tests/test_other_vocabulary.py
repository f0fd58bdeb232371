"""Drafts with another tokenizer: tokens spell their exact bytes; re-spelling in pieces ==
spelling at once; greedy output == plain greedy output token for token (a SentencePiece
target with a byte-level BPE draft and the reverse, on text tokenizers disagree about);
sampled output follows the target's distribution (a q left unnormalised fails the same
test); the draft's cache ends as a fresh pass over the verified text would leave it."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from mlxspec import Session
from mlxspec.drafts import OtherVocabularyDraft, OtherVocabularyDrafter, one_row
from mlxspec.drafts.other_vocabulary import TextTrack
from mlxspec.engine import FixedK, Generation, RandomKeys
from mlxspec.engine.sampling import SamplingParams
from mlxspec.errors import InputError
from mlxspec.text import load_tokenizer
from mlxspec.text.spelling import spell
from mlxspec.text.tokenizer import SentencePieceTokenizer
from full_run import fewer, full_only
from synthetic import mistral_tokenizer_file
from test_speculative import chi2_critical, chi2_stat, exact_joint, tiny

BPE = load_tokenizer(Path(__file__).parents[1] / "mlxspec" / "assets" / "smollm2-draft")
SP = SentencePieceTokenizer(mistral_tokenizer_file())
TRICKY = ["Héllo wörld 😀🎉 — «quotes» 日本語テキスト", "   runs   of spaces\n\n\n\tand tabs  ",
          "digits 1234567890 3.14159 x=42", " leading space, then <|im_start|> and [INST] <s> written out",
          "def f(x):\n    return x ** 2  # ok\n"]


@pytest.mark.parametrize("tokenizer", [SP, BPE], ids=["sentencepiece", "byte-level-bpe"])
def test_tokens_spell_the_text_and_fragments_spell_alike(tokenizer):
    table = tokenizer.token_bytes()
    encode = lambda s: tokenizer.encode(s, add_bos=False)  # noqa: E731
    for text in TRICKY:
        data = text.encode()
        ids, ends = spell(encode, table, data)
        assert b"".join(table[i] for i in ids) == data and ends[-1] == len(data)
        track = TextTrack(tokenizer, table)
        grown = b""
        for cut in range(0, len(data), 3):  # in pieces of 3 bytes: characters split too
            grown = data[: cut + 3]
            track.respell(grown)
        assert b"".join(table[i] for i in track.ids[track.fixed :]) == data
        assert track.ids[track.fixed :] == ids, text


class Shadow:
    """A draft 'model' over another tokenizer that predicts what the target would: it
    re-spells its input in the target's tokens and puts the target's logits on the draft
    tokens that spell the same bytes; the draft's other tokens share three times as much
    mass as those, and seeded noise keeps it from agreeing always."""

    def __init__(self, target, target_tok, draft_tok, noise: float = 1.0) -> None:
        self.target, self.target_tok, self.noise = target, target_tok, noise
        self.table = draft_tok.token_bytes()
        by_bytes = {}
        for i, b in enumerate(target_tok.token_bytes()):
            if b and i < target.args.vocab_size:
                by_bytes.setdefault(b, i)
        self.to_target = mx.array([by_bytes.get(b, -1) if b else -1 for b in self.table])
        self.args = SimpleNamespace(vocab_size=len(self.table), num_hidden_layers=1)
        self.seen: dict[tuple[int, ...], mx.array] = {}  # the chi-square runs meet the same texts again

    def make_cache(self, max_rollback: int = 0) -> list:
        return [SimpleNamespace(ids=[], rollback=None)]

    def model(self, tokens: mx.array, cache: list) -> mx.array:
        """Log the tokens fed (the cache is the text so far); the 'hidden state' is a placeholder."""
        log = cache[0]
        log.ids.extend(tokens[0].tolist())
        log.rollback = lambda n: log.ids.__delitem__(slice(len(log.ids) - n, None))
        self.current = tuple(log.ids)
        return mx.zeros((1, tokens.shape[1], 1))

    def __call__(self, tokens: mx.array, cache: list) -> mx.array:
        """Logits [1, 1, V] after the text fed so far (only the last position is asked for)."""
        self.model(tokens, cache)
        if self.current not in self.seen:
            self.seen[self.current] = self._predict(self.current)
        return self.seen[self.current][:, None]

    def _predict(self, ids: tuple[int, ...]) -> mx.array:
        text = b"".join(self.table[i] or b"" for i in ids).decode(errors="replace")
        logits = self.target(mx.array([self.target_tok.encode(text)]))[:, -1]
        shared = self.to_target >= 0
        mapped = mx.where(shared, logits[:, mx.maximum(self.to_target, 0)], 0.0)
        rest = mx.logsumexp(mx.where(shared, mapped, -mx.inf)) + math.log(3 / max(1, int((~shared).sum().item())))
        key = mx.random.key(len(ids))
        noisy = mx.where(shared, mapped, rest) + self.noise * mx.random.normal(mapped.shape, key=key)
        mx.eval(noisy)
        return noisy


def pair(kind: str, vocab_scale: float = 1.0, window: int | None = 8):
    """(target, its tokenizer, draft tokenizer) for a SentencePiece target with a byte-level
    BPE draft, or the reverse."""
    target_tok, draft_tok = (SP, BPE) if kind == "sp-target" else (BPE, SP)
    target = tiny(20, vocab=target_tok.vocab_size, window=window, layers=1)
    target.update({"lm_head": {"weight": target.lm_head.weight * vocab_scale}})
    return target, target_tok, draft_tok


@pytest.mark.parametrize("kind", ["sp-target", full_only("bpe-target")])  # bpe-target: also the batch test's greedy rows
def test_greedy_other_vocabulary_equals_greedy_plain(kind):
    target, target_tok, draft_tok = pair(kind)
    drafts = {"shadow": Shadow(target, target_tok, draft_tok, noise=0.02),
              "random": tiny(21, vocab=draft_tok.vocab_size, window=None, layers=1)}
    plain = Session(target, target_tok)
    for name, model in drafts.items():
        session = Session(target, target_tok, OtherVocabularyDraft(model, draft_tok, target_tok),
                          num_draft_tokens=4, draft_policy="fixed")
        rates = []
        for prompt in TRICKY:
            expected = [s.token for s in plain.stream(prompt, max_tokens=40)]
            steps = list(session.stream(prompt, max_tokens=40))
            assert [s.token for s in steps] == expected, (name, prompt)
            rates.append(steps[-1].stats.acceptance_rate)
        if name == "shadow":  # the pair agrees often: acceptance and rejection both exercised
            assert 0.05 < np.mean(rates) < 0.95, rates


def test_a_draft_token_becomes_the_target_token_text_is_written_with_not_a_byte_fallback():
    """Under a SentencePiece target, a BPE draft's `,` is the target's piece `,` (what the
    target was trained on), not its byte token `<0x2C>` of the same bytes (a lower id)."""
    draft = OtherVocabularyDraft(tiny(21, vocab=BPE.vocab_size, window=None, layers=1), BPE, SP)
    pieces, spelled = SP.pieces(), SP.token_bytes()
    written = {spelled[i] for i, p in enumerate(pieces) if spelled[i] and not p.startswith("<0x")}
    mapped = draft.shared_target.tolist()
    assert not [t for t in mapped if pieces[t].startswith("<0x") and spelled[t] in written]
    by_bytes = {spelled[t]: t for t in mapped}
    printable = [bytes([c]) for c in range(33, 127) if bytes([c]) in by_bytes]
    assert len(printable) >= 90 and all(pieces[by_bytes[b]] == b.decode() for b in printable)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_batch_drafts_with_another_vocabulary_row_by_row(temperature):
    """Such a draft shares no pass between rows: each row drafts alone, and the rows are
    verified together; greedy rows equal plain decoding, seeded sampled rows their own run."""
    target, target_tok, draft_tok = pair("bpe-target")
    draft = OtherVocabularyDraft(Shadow(target, target_tok, draft_tok, noise=0.02), draft_tok, target_tok)
    session = Session(target, target_tok, draft, num_draft_tokens=3, draft_policy="fixed")
    done = session.batch_generate(TRICKY, max_tokens=24, temperature=temperature, seed=5)
    assert sum(c.stats.drafted for c in done) > 0 and sum(c.stats.accepted for c in done) > 0
    if temperature == 0:
        plain = Session(target, target_tok)
        assert [c.tokens for c in done] == [[s.token for s in plain.stream(p, max_tokens=24)] for p in TRICKY]


def other_chi2(target, make_drafter, params: SamplingParams, prompt: list[int], runs: int) -> tuple[float, int]:
    """Chi-square of the first 2 tokens of seeded generations drafting 2 per round."""
    exact = exact_joint(target, prompt, params, 2)
    keys = sorted(exact)
    index = {key: i for i, key in enumerate(keys)}
    counts = np.zeros(len(keys))
    for seed in range(runs):
        generation = Generation(target, one_row(make_drafter()), FixedK(2), params, RandomKeys(seed), 64)
        out = [generation.prefill(prompt)]
        out += [t for t, _ in generation.round(2)]
        counts[index[tuple(out[:2])]] += 1
    return chi2_stat(counts, np.array([exact[key] for key in keys]))


class Unnormalised(OtherVocabularyDrafter):
    """The mistake to catch: q over the shared tokens left as the draft's full-vocabulary
    probabilities (the shared tokens hold a quarter of the shadow's mass), not renormalised."""

    def _intersection(self, logits, k, pick):
        def misstated(restricted):
            choice, lp = pick(restricted)
            return choice, lp + math.log(0.25)
        return super()._intersection(logits, k, misstated)


@pytest.mark.parametrize("params", [SamplingParams(1.0), full_only(SamplingParams(1.0, top_p=0.97))], ids=["T=1", "top-p"])
def test_sampled_other_vocabulary_has_the_target_distribution_and_an_unnormalised_q_fails(params):
    target, target_tok, draft_tok = pair("sp-target", vocab_scale=5.0, window=None)
    draft = OtherVocabularyDraft(Shadow(target, target_tok, draft_tok, noise=1.0), draft_tok, target_tok)
    prompt = target_tok.encode("The cat")
    runs = fewer(1200, 2)  # at T=1 the unnormalised q scores 162 at 600 runs, 271 at 1200 (critical 28-30)
    stat, df = other_chi2(target, lambda: OtherVocabularyDrafter(draft, 2, 64, greedy=False), params, prompt, runs)
    assert stat < chi2_critical(df), (stat, df)
    stat, df = other_chi2(target, lambda: Unnormalised(draft, 2, 64, greedy=False), params, prompt, runs)
    assert stat > chi2_critical(df), (stat, df)


def test_the_draft_cache_ends_as_a_fresh_pass_over_the_verified_text():
    target, target_tok, draft_tok = pair("bpe-target")
    model = tiny(22, vocab=draft_tok.vocab_size, window=8, layers=1)
    draft = OtherVocabularyDraft(model, draft_tok, target_tok)
    for greedy, params in ((True, SamplingParams()), (False, SamplingParams(1.0))):
        drafter = OtherVocabularyDrafter(draft, 4, 16, greedy=greedy)
        generation = Generation(target, one_row(drafter), FixedK(4), params, RandomKeys(3), 16)
        out = [generation.prefill(target_tok.encode(TRICKY[0]))]
        while len(out) < 40:
            out += [t for t, _ in generation.round(4)]
        cached = drafter._catch_up()  # `last` joins the text, as at the next proposal
        spelled = drafter.track.ids
        fresh = model(mx.array([spelled]))[:, -1]
        assert mx.abs(fresh - cached).max().item() < 1e-4


def test_a_draft_that_shares_no_token_is_refused():
    target, target_tok, _ = pair("sp-target")
    lonely = SimpleNamespace(token_bytes=lambda: [b"\xff\xfe" + bytes([i]) for i in range(10)], vocab_size=10)
    with pytest.raises(InputError, match="shares no token"):
        OtherVocabularyDraft(tiny(23, vocab=10, window=None, layers=1), lonely, target_tok)
