"""The command line's contract for bad input: for every bad invocation below, stderr is
exactly one `error:` line naming what is wrong, the exit code is non-zero, no traceback
appears, and checks that need nothing loaded come before anything is loaded or converted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlxspec.cli as cli
import mlxspec.selection as selection
from mlxspec.arguments import run
from mlxspec.engine.calibrate import CALIBRATION_VERSION

E = True  # early: refused before any model is loaded or any checkpoint opened
BAD_CONFIGS = {"eps": {"rms_norm_eps": "1e-5"}, "gelu": {"hidden_act": "gelu"}, "heads": {"num_attention_heads": 0},
               "window": {"sliding_window": "4096"}}
G = ["generate", "-p", "hi", "-m", "{model}"]
CASES = [
    # generate: usage and numbers
    ("no prompt", ["generate"], "Missing option '--prompt'", E),
    ("not a number", [*G, "-n", "abc"], "Invalid value for '--max-tokens'", E),
    ("unknown option", [*G, "--frobnicate"], "No such option: --frobnicate", E),
    ("negative budget", [*G, "-n", "-1"], "max_tokens must be >= 0", E),
    ("k = 0", [*G, "--draft", "{model}", "-k", "0"], "--num-draft-tokens must be in 1..64", E),
    ("k = 10**6", [*G, "--draft", "{model}", "-k", "1000000"], "--num-draft-tokens must be in 1..64", E),
    ("temperature nan", [*G, "-t", "nan"], "temperature must be a finite number >= 0", E),
    ("temperature inf", [*G, "-t", "inf"], "temperature must be a finite number >= 0", E),
    ("top-p 0", [*G, "--top-p", "0"], "top_p must be in (0, 1]", E),
    ("top-p 2", [*G, "--top-p", "2"], "top_p must be in (0, 1]", E),
    ("top-k -1", [*G, "--top-k", "-1"], "top_k must be >= 0", E),
    ("seed -2", [*G, "--seed", "-2"], "seed must be in 0..2**64-1", E),
    ("seed 2**70", [*G, "--seed", str(2**70)], "seed must be in 0..2**64-1", E),
    ("prefill chunk 0", [*G, "--prefill-chunk", "0"], "prefill_chunk must be a positive integer", E),
    ("prefill chunk 2**31", [*G, "--prefill-chunk", str(2**31)], "prefill_chunk must be a positive integer up to", E),
    ("empty prompt", ["generate", "-p", "  ", "-m", "{model}"], "prompt is empty", E),
    ("prompt not UTF-8", ["generate", "-p", "caf\udce9", "-m", "{model}"], "is not valid UTF-8 text", E),
    ("model and pair", [*G, "--pair", "{tmp}"], "give one of --model/--draft, --pair or --demo", E),
    ("n-gram of 0", [*G, "--draft", "ngram", "--max-ngram", "0"], "max_ngram must be an integer in 1..64", E),
    ("n-grams backwards", [*G, "--draft", "ngram", "--min-ngram", "4"], "min_ngram 4 > max_ngram 3", E),
    ("lookup, no draft", [*G, "--lookup"], "--lookup goes with a draft model", False),
    ("draft tokenizer unreadable", [*G, "--draft", "{bad}/tokenizer"], "cannot load tokenizer", False),
    # generate: what is loaded
    ("no such model", ["generate", "-p", "hi", "-m", "{tmp}/absent"], "no such folder", False),
    ("model is a file", ["generate", "-p", "hi", "-m", "{model}/config.json"], "is a file; expected a model folder", False),
    ("no config", ["generate", "-p", "hi", "-m", "{tmp}"], "no config.json or params.json", False),
    ("string eps", ["generate", "-p", "hi", "-m", "{bad}/eps"], "rms_norm_eps must be a finite number in (0, 1)", False),
    ("gelu", ["generate", "-p", "hi", "-m", "{bad}/gelu"], "hidden_act 'gelu' is not supported", False),
    ("zero heads", ["generate", "-p", "hi", "-m", "{bad}/heads"], "num_attention_heads must be a positive integer", False),
    ("string window", ["generate", "-p", "hi", "-m", "{bad}/window"], "sliding_window must be a positive integer", False),
    ("config not UTF-8", ["generate", "-p", "hi", "-m", "{bad}/bytes"], "is not UTF-8 text", False),
    ("no pair.json", ["generate", "-p", "hi", "--pair", "{tmp}"], "no pair.json", False),
    ("prompt beyond context", ["generate", "-p", "word " * 100_000, "-m", "{model}"], "cannot fit in the model's context", False),
    ("prompt over context", ["generate", "-p", "word " * 600, "-m", "{model}"], "more than the model's context of 512", False),
    # demo: checked before converting or loading the demo pair
    ("demo budget", ["demo", "-n", "-1"], "max_tokens must be >= 0", E),
    ("demo k", ["demo", "-k", "0"], "--num-draft-tokens must be in 1..64", E),
    ("demo nan", ["demo", "-t", "nan"], "temperature must be a finite number >= 0", E),
    ("demo blank prompt", ["demo", "-p", "  "], "prompt is empty", E),
    ("demo empty prompt", ["demo", "-p", ""], "prompt is empty", E),
    # bench
    ("open range", ["bench", "--demo", "-k", "1.."], "cannot read '1..'", E),
    ("descending range", ["bench", "--demo", "-k", "8..1"], "range '8..1' runs backwards", E),
    ("empty temperature", ["bench", "--demo", "--temperatures", "0,,1"], "--temperatures: cannot read ''", E),
    ("no repeats", ["bench", "--demo", "--repeats", "0"], "--repeats must be in 1..1000", E),
    ("endless repeats", ["bench", "--demo", "--repeats", str(10**30)], "--repeats must be in 1..1000", E),
    ("one token", ["bench", "--demo", "-n", "1"], "--max-tokens must be >= 2", E),
    ("report on a read-only place", ["bench", "--demo", "-o", "/proc/mlxspec-report"], "cannot write /proc/mlxspec-report", E),
    ("no draft", ["bench", "-m", "{model}"], "bench needs a draft", E),
    ("no prompts file", ["bench", "--demo", "--prompts", "{tmp}/absent.txt"], "cannot read prompts file", E),
    ("prompts not UTF-8", ["bench", "--demo", "--prompts", "{bad}/prompts.txt"], "is not valid UTF-8 text: byte 0xff", E),
    ("unknown prompt kind", ["bench", "--demo", "--kinds", "chat,poetry"], "unknown prompt kind 'poetry'", E),
    ("kinds and prompts", ["bench", "--demo", "--kinds", "chat", "--prompts", "{bad}/prompts.txt"], "not both", E),
    ("report over a file", ["bench", "--demo", "-o", "{model}/config.json"], "exists and is not a folder", E),
    ("report over the model", ["bench", "-m", "{model}", "--draft", "{model}", "-o", "{model}", "--force"],
     "is the source", E),
    ("mlx-lm draft alone", ["bench", "--demo", "--mlx-lm-draft", "{model}"], "only applies with --compare-mlx-lm", E),
    # convert
    ("no source", ["convert", "-o", "{tmp}/out"], "missing SRC", E),
    ("shard nan", ["convert", "{model}", "-o", "{tmp}/out", "--max-shard-size", "nan"], "--max-shard-size must be", E),
    ("shard negative", ["convert", "{model}", "-o", "{tmp}/out", "--max-shard-size", "-1"], "--max-shard-size must be", E),
    ("bits 5", ["convert", "{model}", "-o", "{tmp}/out", "--bits", "5"], "--bits must be one of", False),
    ("group 7", ["convert", "{model}", "-o", "{tmp}/out", "--group-size", "7"], "--group-size must be one of", False),
    ("dtype", ["convert", "{model}", "-o", "{tmp}/out", "--dtype", "float8"], "--dtype must be one of", False),
    ("half a pair", ["convert", "--target", "{model}", "-o", "{tmp}/out"], "pair mode needs both", E),
    ("draft bits alone", ["convert", "{model}", "-o", "{tmp}/out", "--draft-bits", "4"], "only applies with --target", E),
    ("revision of a folder", ["convert", "{model}", "-o", "{tmp}/out", "--revision", "main"],
     "--revision applies to Hub repo ids", False),
    ("into the source", ["convert", "{model}", "-o", "{model}", "--force"], "is the source", False),
    ("no such gguf", ["convert", "{tmp}/absent.gguf", "-o", "{tmp}/out"], "no such GGUF file", False),
    ("string theta", ["convert", "{bad}/theta", "-o", "{tmp}/out"], "rope_theta must be a finite number in (0, 1e+30)", False),
]


def broken_copies(model: Path, bad: Path) -> dict[str, str]:
    """Copies of `model` with the broken configs the table names, and a prompts file that is
    not UTF-8, in `bad`: the placeholders {model} and {bad} (benchmarks/hostile.py uses it too)."""
    # theta where transformers reads it: in rope_parameters, which wins over a top-level rope_theta
    theta = {"rope_theta": "1e6", "rope_parameters": {"rope_type": "default", "rope_theta": "1e6"}}
    for name, change in [*BAD_CONFIGS.items(), ("theta", theta)]:
        shutil.copytree(model, bad / name)
        config = json.loads((bad / name / "config.json").read_text())
        (bad / name / "config.json").write_text(json.dumps({**config, **change}))
    shutil.copytree(model, bad / "bytes")
    (bad / "bytes" / "config.json").write_bytes(b'{"model_type": "mistral\xff"}')
    (bad / "prompts.txt").write_bytes(b"fine\n\xff\xfe not text\n")
    shutil.copytree(model, bad / "tokenizer")  # a draft whose tokenizer cannot be read
    for f in (bad / "tokenizer").glob("tokenizer*"):
        f.unlink()
    (bad / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    return {"model": str(model), "bad": str(bad)}


@pytest.fixture(scope="module")
def places(hf_window_dir, tmp_path_factory) -> dict[str, str]:
    return broken_copies(hf_window_dir, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name, args, message, early", CASES, ids=[c[0] for c in CASES])
def test_one_error_line(name, args, message, early, places, tmp_path, capsys, monkeypatch):
    if early:
        def loaded(*a, **k):
            raise AssertionError(f"{name}: something was loaded before the arguments were checked")

        for attr in ("load_draft", "convert_one", "convert_pair", "run_bench"):
            monkeypatch.setattr(cli, attr, loaded)
        for attr in ("load", "load_lead", "read_pair_manifest", "load_draft"):
            monkeypatch.setattr(selection, attr, loaded)
        monkeypatch.setattr(cli.demo_pair, "demo_target", loaded)
    argv = [a.format(tmp=tmp_path, **places) for a in args]
    code = run(cli.app, argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "internal error" not in lines[0] and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_real_processes_bytes_in_argv_and_on_stdin(hf_window_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mlxspec", "generate", "-m", str(hf_window_dir), "-n", "2", "-p"]
    for args, stdin, message in [([b"caf\xe9"], None, "the --prompt argument is not valid UTF-8 text"),
                                 (["-"], b"caf\xe9 au lait", "standard input is not valid UTF-8 text: byte 0xe9"),
                                 (["-"], b"", "prompt is empty (nothing on standard input)"),
                                 (["-"], "closed", "standard input is closed")]:
        closed = stdin == "closed"  # `<&-`
        res = subprocess.run([*cmd, *args], input=None if closed else stdin, capture_output=True, env=env,
                             timeout=300, preexec_fn=(lambda: os.close(0)) if closed else None)
        err = res.stderr.decode()
        lines = err.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), err


def test_a_bug_is_still_one_line(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "check_generation", broken)
    assert run(cli.app, ["generate", "-p", "hi", "-m", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: internal error (KeyError: 'boom'); please report it (MLXSPEC_DEBUG=1 shows the traceback)"]


@pytest.mark.parametrize("damage", [b"\x00\xff\xfe garbage", json.dumps({"version": CALIBRATION_VERSION}).encode(),
                                    b'{"version": 1, "entries": {}}'])
def test_a_corrupt_calibration_cache_is_one_warning_and_the_answer(damage, hf_window_dir, tmp_path):
    (tmp_path / "calibration.json").write_bytes(damage)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLXSPEC_CACHE": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "mlxspec", "generate", "-m", str(hf_window_dir), "--draft",
                          str(hf_window_dir), "-p", "Hello", "-n", "4", "-k", "2", "--json"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0 and json.loads(res.stdout)["generation_tokens"] == 4, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "calibration cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: calibration cache") and "measuring again" in warnings[0]
    assert json.loads((tmp_path / "calibration.json").read_text())["version"] == CALIBRATION_VERSION  # repaired
