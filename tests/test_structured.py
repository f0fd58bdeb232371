"""Structured output under speculation: greedy constrained speculative == greedy constrained
plain, token for token, for every draft kind, alone and as batch rows, with JSON schemas,
any JSON object, Lark grammars and regexes; the text follows its format (checked with
Python's own `json` and `re`, not the library that enforces it); sampled constrained output
follows the exact constrained distribution (chi-square, and a variant that verifies
against the unmasked target must fail)."""

from __future__ import annotations

import json
import re
import warnings

import mlx.core as mx
import numpy as np
import pytest

from char_tokenizer import CharTokenizer
from full_run import full_only
from mlxspec import Session
from mlxspec.drafts import make_drafter
from mlxspec.engine import FixedK, Generation, RandomKeys
from mlxspec.engine.sampling import SamplingParams, process_logits
from mlxspec.structured import Constraint, response_format
from test_kv_decoding import pair, tiny
from test_speculative import chi2_critical, chi2_stat, perturbed

pytest.importorskip("llguidance")

TOK = CharTokenizer()
SCHEMA = {"type": "object", "properties": {"x": {"enum": ["ab", "cd"]}, "n": {"type": "integer", "minimum": 0,
                                                                             "maximum": 99}, "ok": {"type": "boolean"}},
          "required": ["x", "n", "ok"], "additionalProperties": False}
FORMATS = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA, "strict": True}},
    "json_object": {"type": "json_object"},
    "regex": {"type": "regex", "regex": "[a-f]{2,6}(, [a-f]{2,6}){0,3}"},
    "grammar": {"type": "grammar", "grammar": 'start: item ("," item)*\nitem: "true" | "null" | /[0-9]{1,3}/'},
}
SAMPLES = 1200
PROMPTS = ['{"x":"ab","n":12,"ok":true} then {"x":"', "abc, def, abc, de", "12,null,true,7,", "zz"]


def follows(kind: str, text: str) -> bool:
    """Whether finished `text` is in the format `kind` (by Python's json and re)."""
    if kind in ("json_schema", "json_object"):
        value = json.loads(text)
        if kind == "json_object":
            return isinstance(value, dict)
        return (set(value) == {"x", "n", "ok"} and value["x"] in ("ab", "cd") and isinstance(value["ok"], bool)
                and type(value["n"]) is int and 0 <= value["n"] <= 99)
    pattern = {"regex": "[a-f]{2,6}(, [a-f]{2,6}){0,3}", "grammar": r"(true|null|[0-9]{1,3})(,(true|null|[0-9]{1,3}))*"}
    return re.fullmatch(pattern[kind], text) is not None


def session(kind: str, k: int) -> Session:
    target, draft = pair(kind, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a perturbed copy is not smaller than the target
        return Session(target, TOK, draft, num_draft_tokens=k, draft_policy="fixed")


@pytest.mark.parametrize("kind", ["model", "feature", "ngram", "lookup+model"])
def test_greedy_constrained_speculation_equals_greedy_constrained_plain(kind):
    drafted, finished = 0, 0
    for k in (1, 3):
        s = session(kind, k)
        for name, fmt in FORMATS.items():
            for prompt in PROMPTS[:2]:
                plain = list(s.stream(prompt, max_tokens=40, response_format=fmt, speculative=False))
                spec = list(s.stream(prompt, max_tokens=40, response_format=fmt))
                assert [st.token for st in spec] == [st.token for st in plain], (name, prompt, k)
                drafted += spec[-1].stats.drafted
                if plain[-1].stats.finish_reason == "stop":
                    finished += 1
                    assert follows(name, "".join(st.text for st in plain)), (name, prompt)
    assert drafted > 0 and finished >= 4


def test_the_format_changes_the_text_so_the_greedy_test_can_fail():
    s = session("model", 3)
    free = s.generate(PROMPTS[0], max_tokens=30)
    assert all(s.generate(PROMPTS[0], max_tokens=30, response_format=fmt) != free for fmt in FORMATS.values())


@pytest.mark.parametrize("kind", ["model", "feature", "ngram"])
def test_constrained_batch_rows_equal_their_output_alone(kind):
    """Rows of one batch, each with its own format (and one free), speculating together."""
    s = session(kind, 3)
    formats = [*FORMATS.values(), None]
    requests = [s.request(p, max_tokens=30, response_format=f) for p, f in zip(PROMPTS + PROMPTS[:1], formats)]
    outs: list[list] = [[] for _ in requests]
    batch = s.open_batch()
    for request, out in zip(requests, outs):
        batch.add(s.row(request, out.append))
    batch.run()
    for request, out, fmt in zip(requests, outs, formats):
        alone = [st.token for st in s.stream(request.ids, max_tokens=30, speculative=False, prompt_cache=False,
                                             response_format=fmt)]
        assert [st.token for st in out] == alone, fmt
    assert sum(out[-1].stats.accepted for out in outs) > 0


@pytest.mark.filterwarnings("ignore:the draft")
def test_a_draft_of_another_vocabulary_proposes_under_the_format():
    from mlxspec.drafts import OtherVocabularyDraft
    from test_other_vocabulary import BPE, SP

    target = tiny(20, vocab=SP.vocab_size, layers=1)
    draft = OtherVocabularyDraft(tiny(21, vocab=BPE.vocab_size, window=None, layers=1), BPE, SP)
    plain, spec = Session(target, SP), Session(target, SP, draft, num_draft_tokens=4, draft_policy="fixed")
    fmt = {"type": "regex", "regex": "(yes|no|maybe)( [a-z]{1,8}){0,4}"}
    for prompt in ("Is it so? ", "yes yes no "):
        expected = [st.token for st in plain.stream(prompt, max_tokens=24, response_format=fmt)]
        assert [st.token for st in spec.stream(prompt, max_tokens=24, response_format=fmt)] == expected


def exact_distribution(target, prompt: list[int], fmt, params: SamplingParams) -> dict[tuple[int, ...], float]:
    """P(each whole output, its end token included) under constrained plain sampling."""
    out: dict[tuple[int, ...], float] = {}
    todo = [((), 1.0)]
    while todo:
        prefix, prob = todo.pop()
        constraint = Constraint(fmt, TOK, target.args.vocab_size)
        constraint.advance(list(prefix))
        logits = target(mx.array([prompt + list(prefix)]), target.make_cache())[:, -1]
        probs = np.exp(np.array(process_logits(constraint.masked(logits), params)[0]))
        for t in map(int, np.nonzero(probs > 0)[0]):
            (out.__setitem__(prefix + (t,), prob * probs[t]) if t in TOK.eos_ids
             else todo.append((prefix + (t,), prob * probs[t])))
    return out


def sampled_output(target, draft, prompt, fmt, params, seed: int) -> tuple[int, ...]:
    constraint = Constraint(fmt, TOK, target.args.vocab_size)
    generation = Generation(target, make_drafter(draft, target, 2, 64, False), FixedK(2), params, RandomKeys(seed),
                            64, target.make_cache(2), constraint=constraint)
    out = [generation.prefill(prompt)]
    while 0 not in out and len(out) < 4:  # the grammar's outputs end by the third token
        out += [t for t, _ in generation.round(2)]
    return tuple(out[: out.index(0) + 1] if 0 in out else out)


@pytest.mark.parametrize("params, broken", [(SamplingParams(1.0), False), (SamplingParams(1.0), True),
                                            full_only(SamplingParams(0.8, top_k=4, top_p=0.9), False)])
def test_sampled_constrained_speculation_follows_the_constrained_distribution(params, broken, monkeypatch):
    """Whole outputs of a small grammar (k = 2, a draft that half agrees) against their exact
    probabilities; the broken variant verifies against the target without the mask (the
    draft still masked) and must fail."""
    if broken:
        monkeypatch.setattr(Constraint, "verification_masks",
                            lambda self, drafts: mx.ones((len(drafts) + 1, self.vocab), dtype=mx.bool_))
    target = tiny(30, window=None, layers=1)
    target.update({"lm_head": {"weight": target.lm_head.weight / 4}})  # flatter: many outputs have mass
    draft = perturbed(target, 0.5, 3)
    fmt = response_format({"type": "regex", "regex": "[abc]{1,2}"})
    prompt = TOK.encode("ab ca ")
    exact = exact_distribution(target, prompt, fmt, params)
    keys = sorted(exact)
    counts, outside = np.zeros(len(keys)), 0
    for seed in range(SAMPLES):
        got = sampled_output(target, draft, prompt, fmt, params, seed)
        if got in exact:
            counts[keys.index(got)] += 1
        else:
            outside += 1
    assert sum(p * SAMPLES >= 5 for p in exact.values()) >= 5  # enough cells for the test to have power
    stat, df = chi2_stat(counts, np.array([exact[k] for k in keys]))
    assert (outside == 0 and stat < chi2_critical(df)) != broken, (stat, df, outside)


def test_generate_takes_a_format_as_text_or_a_file(hf_window_dir, tmp_path):
    from test_cli import run

    schema = tmp_path / "answer.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                                  "additionalProperties": False}))
    grammar = tmp_path / "yes-no.gbnf"
    grammar.write_text('root ::= ("yes" | "no") "!"')
    for fmt, pattern in ((str(schema), r'\{\s*"ok"\s*:\s*(true|false)\s*\}'), (str(grammar), r"(yes|no)!"),
                         ('{"type": "regex", "regex": "[0-9]{3}"}', "[0-9]{3}")):
        res = run("generate", "-m", str(hf_window_dir), "-p", "Answer:", "-n", "30", "-t", "0", "--json",
                  "--response-format", fmt)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["finish_reason"] == "stop" and re.fullmatch(pattern, out["text"]), (fmt, out["text"])


@pytest.mark.parametrize("fmt, message", [
    ("absent.json", "response_format: 'absent.json' is not 'json', a JSON object or a file"),
    ('{"type": "json_schema"', "response_format: not valid JSON"),
    ('{"type": "regex", "regex": "(a"}', "unclosed group"),
    ("{\"type\": \"strng\"}", "response_format.type must be one of"),
])
def test_a_bad_format_on_the_command_line_is_one_line(hf_window_dir, fmt, message):
    from test_cli import run

    res = run("generate", "-m", str(hf_window_dir), "-p", "Hi", "--response-format", fmt)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: response_format"), res.stderr
    assert message in lines[0]


@pytest.mark.parametrize("layout", ["tokenizer.json", "tokenizer.model"])
def test_a_sentencepiece_tokenizer_spells_a_grammars_fixed_text_without_its_leading_space(hf_tokenizer_dir, layout,
                                                                                          tmp_path):
    """SentencePiece encodes "{" as "▁{"; the tokens a grammar forces must spell "{" alone
    (else the reply's first token is " {" and every later mask is empty)."""
    from mlxspec.text import load_tokenizer

    for f in hf_tokenizer_dir.iterdir():
        if layout == "tokenizer.json" or f.name == layout:
            (tmp_path / f.name).symlink_to(f)
    tokenizer = load_tokenizer(tmp_path)
    spelled = tokenizer.token_bytes()
    for grammar, text in [('start: "{" /[a-z]+/ "}"', b"{"), ('start: "<tool_call>\\n" "x"', b"<"),
                          ('start: "\\n" "a"', b"\n")]:
        allowed = np.nonzero(Constraint(response_format({"type": "grammar", "grammar": grammar}), tokenizer,
                                        tokenizer.vocab_size).allowed())[0]
        assert len(allowed) and all(text.startswith(spelled[i]) or spelled[i].startswith(text) for i in allowed)
        assert not any(spelled[i].startswith(b" ") for i in allowed)
