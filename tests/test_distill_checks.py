"""`distill` refuses every bad option and every bad prompts-file line before any work: one
`InputError` naming the option (or file and line), nothing written anywhere (no draft, no
work folder, no cached answers); on the command line, one `error:` line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlxspec.distill import distill
from mlxspec.distill.prompts_file import read_prompts
from mlxspec.errors import InputError

SMALL = dict(max_new=8, seq_len=16, head_vocab=64, batch=4, answer_batch=4, eval_k=2, eval_prompts=1, steps=3)
PROMPTS = ["Tell me about the sea.", {"prompt": "Write a haiku."}, "Explain gravity.",
           {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]}]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    return path


def refused(target: Path, tmp_path: Path, cache: Path, match: str, **options) -> None:
    """distill with `options` raises InputError matching `match`, and wrote nothing."""
    with pytest.raises(InputError, match=match):
        distill(target, tmp_path / "draft", **{**SMALL, **options})
    assert not (tmp_path / "draft").exists() and not (tmp_path / "draft.work").exists()
    assert not (cache / "distill-answers").exists()


HOSTILE = [  # (option, value, what the line says)
    *[("lr", v, r"--lr must be a number in \(0, 1\]") for v in (-1.0, 0.0, float("nan"), float("inf"), -float("inf"),
                                                               1e30, "0.1", True)],
    *[("seed", v, r"--seed must be an integer in 0\.\.4294967295") for v in (-1, 2**32, 2**70, 1.5, None)],
    *[("steps", v, "--steps must be an integer in 1..") for v in (0, -5, 2**31, 2**70, 2.0)],
    *[("batch", v, "--batch must be an integer in 1..") for v in (0, -1, 2**63)],
    *[("layers", v, "--layers must be an integer in 1..") for v in (0, -2)],
    *[("seq_len", v, "--seq-len must be an integer in 2..") for v in (0, 1, -1, 2**40)],
    *[("max_new", v, "--max-new must be an integer in 1..") for v in (0, -1, 2**40)],
    *[("head_vocab", v, "--head-vocab must be an integer in 1..") for v in (0, -1, 2**70)],
    *[("unroll", v, "--unroll must be an integer in 1..") for v in (0, -1)],
    ("unroll", 16, "--unroll must be less than --seq-len"),
    *[("minutes", v, "--minutes must be a finite number > 0") for v in (0, -1, float("nan"), float("inf"), "5")],
    *[("eval_k", v, "eval_k must be an integer in 1..64") for v in (0, 65)],
    *[(name, 0, f"{name} must be an integer in 1..") for name in ("answer_batch", "eval_prompts", "checkpoint_every")],
    ("kind", "medusa", "--kind must be one of"),
    ("resume", "yes", "resume must be True or False"),
    ("dequantize", "no", "dequantize must be None, True or False"),
]


@pytest.mark.parametrize("option, value, match", HOSTILE)
def test_a_bad_option_is_refused_before_any_work(option, value, match, hf_full_dir, tmp_path, cache):
    refused(hf_full_dir, tmp_path, cache, match, **{option: value})


@pytest.mark.parametrize("option, value, match", [
    ("seq_len", 10**9, r"--seq-len must be in 2\.\.512 \(the target's context\)"),
    ("seq_len", 513, r"--seq-len must be in 2\.\.512"),
    ("max_new", 512, r"--max-new must be in 1\.\.511"),
    ("max_new", 10**6, r"--max-new must be in 1\.\.511"),
    ("max_new", 500, "line 1: the prompt is .* tokens .* context of 512"),
    ("layers", 3, r"--layers must be in 1\.\.2"),
    ("head_vocab", 32001, r"--head-vocab must be in 1\.\.32000"),
    ("feature_layers", [1, 5], "feature layers must be"),
])
def test_what_depends_on_the_target_is_refused_before_any_work(option, value, match, hf_full_dir, prompts_file,
                                                               tmp_path, cache):
    refused(hf_full_dir, tmp_path, cache, match, prompts=prompts_file, **{option: value})


@pytest.mark.parametrize("line, match", [
    ('{"messages": "x"}', '"messages" must be a list'),
    ('{"messages": {"role": "user", "content": "hi"}}', '"messages" must be a list'),
    ('{"messages": []}', "the list of messages is empty"),
    ('{"messages": ["hi"]}', "message 0 must be"),
    ('{"messages": [{"role": "user", "content": 3}]}', "message 0 must be"),
    ('{"messages": [{"role": "user", "content": null}]}', "message 0 must be"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}', "message 0 must be"),
    ('{"messages": [{"content": "hi"}]}', "message 0 must be"),
    ('[{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]', "message 1 must be"),
    ('{"messages": [{"role": "system", "content": "be kind"}]}', "no user message with text"),
    ('[{"role": "user", "content": "  "}]', "no user message with text"),
    ('[{"role": "user", "content": "\\ud800"}]', "message 0's content is not valid UTF-8"),
    ('{"prompt": ["a"]}', '"prompt" must be a non-empty string'),
    ('{"prompt": " "}', '"prompt" must be a non-empty string'),
    ('{"prompt": 3}', '"prompt" must be a non-empty string'),
    ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}', 'exactly one of "prompt" and "messages"'),
    ('{"text": "hi"}', 'exactly one of "prompt" and "messages"'),
    ('"\\udc80"', "not valid UTF-8"),
    ('""', "a prompt is a non-empty string"),
    ("3", "a prompt is a non-empty string"),
    ("null", "a prompt is a non-empty string"),
    ('{"prompt": ', "not valid JSON"),
])
def test_every_prompts_file_line_is_checked_and_named(line, match, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(f'"a fine prompt"\n\n{line}\n"another"\n')
    with pytest.raises(InputError, match=f"mine.jsonl line 3: .*{match}"):
        read_prompts(path)


def test_the_allowed_prompt_forms_are_read_as_given(tmp_path):
    path = tmp_path / "mine.jsonl"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    path.write_text("\ufeff" + "\n".join(json.dumps(p) for p in ["a", {"prompt": "b", "id": 7}, {"messages": chat},
                                                                  chat]) + "\n")
    assert [p for _, p in read_prompts(path)] == ["a", "b", chat, chat]


def test_a_prompts_file_line_is_refused_by_distill_before_any_work(hf_full_dir, tmp_path, cache):
    path = tmp_path / "mine.jsonl"
    path.write_text('"fine"\n{"messages": "x"}\n')
    refused(hf_full_dir, tmp_path, cache, "mine.jsonl line 2", prompts=path)


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "error: --lr must be a number in (0, 1], got nan"),
    (["--lr", "-1"], "error: --lr must be a number in (0, 1], got -1.0"),
    (["--seed", str(2**70)], f"error: --seed must be an integer in 0..4294967295, got {2**70}"),
    (["--seq-len", str(10**9)], "error: --seq-len must be in 2..512 (the target's context), got 1000000000"),
    (["--demo", "--steps", "0"], "give the target"),
])
def test_a_bad_option_is_one_line_on_the_command_line(args, message, hf_full_dir, tmp_path, cache):
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "--target", str(hf_full_dir),
                          "-o", str(tmp_path / "draft"), *args], capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_demo_target_is_checked_for_before_it_is_converted(tmp_path, cache):
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "--demo", "-o", str(tmp_path / "d"),
                          "--lr", "0"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: --lr must be") and not cache.exists(), res.stderr
