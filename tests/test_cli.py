"""The `mlxspec` command as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import smollm2_or_skip


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, input=stdin,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )


def test_generate_streams_text_and_stats(hf_window_dir):
    res = run("generate", "--model", str(hf_window_dir), "--prompt", "Hello", "--max-tokens", "8")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()
    assert "generation: 8 tokens" in res.stderr and "peak memory" in res.stderr


def test_generate_json(hf_window_dir):
    res = run("generate", "-m", str(hf_window_dir), "-p", "-", "-n", "5", "--json", "--chat",
              "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40", "--seed", "3", stdin="Hi")
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["generation_tokens"] == 5 and stats["prompt_tokens"] > 5
    assert {"text", "prompt_tps", "generation_tps", "peak_memory_gb", "finish_reason"} <= set(stats)


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("missing config", ["--prompt", "hi"], "no config.json or params.json"),
        ("no folder", ["--prompt", "hi"], "no such folder"),
        ("unknown arch", ["--prompt", "hi"], "unsupported architecture 'no_such_arch': neither mlxspec's port"),
        ("empty prompt", ["--prompt", ""], "prompt is empty"),
        ("negative max", ["--prompt", "hi", "--max-tokens", "-3"], "max_tokens must be >= 0"),
        ("long prompt", ["--prompt", "word " * 600], "more than the model's context of 512"),
    ],
)
def test_bad_input_is_one_clear_line(hf_window_dir, tmp_path, case, args, message):
    model = {"missing config": tmp_path, "no folder": tmp_path / "absent"}.get(case, hf_window_dir)
    if case == "unknown arch":
        model = tmp_path / "unknown"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "no_such_arch", "n_embd": 8}))
    res = run("generate", "--model", str(model), *args)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_help_documents_every_option():
    res = run("generate", "--help")
    assert res.returncode == 0
    for option in ("--model", "--prompt", "--max-tokens", "--temperature", "--top-p", "--top-k",
                   "--seed", "--chat", "--json", "--prefill-chunk", "--recalibrate",
                   "--temp", "--draft-model", "--num-draft-tokens"):  # the last three: mlx-lm's spellings
        assert option in res.stdout


def test_demo_runs_the_real_pair(tmp_path):
    """`mlxspec demo` on SmolLM2-135M-Instruct + the shipped draft, with a small budget."""
    smollm2_or_skip()
    env_cache = {"MLXSPEC_CACHE": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "mlxspec", "demo", "--max-tokens", "8", "--json", "--no-adaptive", "-k", "2"],
                         capture_output=True, text=True, env={**os.environ, **env_cache}, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "float32" in out["weights"] and len(out["answers"]) == 3
    for answer in out["answers"]:
        assert answer["plain"]["text"] == answer["speculative"]["text"]  # greedy: identical text
        assert answer["speculative"]["generation_tokens"] <= 8
    modes = {row["mode"]: row for row in out["summary"]}
    assert modes["speculative"]["acceptance"] > 0 and modes["plain"]["speedup"] == 1.0
    assert (tmp_path / "demo" / "smollm2-135m-instruct" / "config.json").is_file()  # converted once, cached
    text = subprocess.run([sys.executable, "-m", "mlxspec", "demo", "--max-tokens", "4", "-v", "-p", "Hi"],
                          capture_output=True, text=True, env={**os.environ, **env_cache}, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "speculative" in text.stderr and "speedup" in text.stderr
    assert "### prompt: Hi" in text.stdout and "\x1b[" not in text.stdout  # piped: answers headed, no colours


def test_speculative_generation_from_the_cli(hf_window_dir, tmp_path):
    res = run("convert", "--target", str(hf_window_dir), "--draft", str(hf_window_dir), "-o", str(tmp_path / "pair"))
    assert res.returncode == 0, res.stderr
    plain = run("generate", "-m", str(hf_window_dir), "-p", "Hello", "-n", "12", "--json")
    spec = run("generate", "--pair", str(tmp_path / "pair"), "-p", "Hello", "-n", "12", "--json", "-k", "3", "--no-adaptive")
    assert spec.returncode == 0, spec.stderr
    assert json.loads(spec.stdout)["text"] == json.loads(plain.stdout)["text"]
    assert json.loads(spec.stdout)["acceptance_rate"] == 1.0
    theirs = run("generate", "-m", str(hf_window_dir), "--draft-model", str(hf_window_dir), "-p", "Hello",
                 "--max-tokens", "12", "--temp", "0", "--num-draft-tokens", "3", "--json")  # mlx-lm's spellings
    assert json.loads(theirs.stdout)["text"] == json.loads(plain.stdout)["text"]
    verbose = ["generate", "-m", str(hf_window_dir), "--draft", str(hf_window_dir), "-p", "Hello", "-n", "8", "-v",
               "--no-adaptive"]
    piped = run(*verbose)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout and "speculative: acceptance 1.00" in piped.stderr  # no colours in a pipe
    assert "warning: the draft" in piped.stderr  # same size as the target
    assert "\x1b[32m" in on_a_terminal(*verbose)  # green draft tokens on a terminal


def on_a_terminal(*args: str) -> str:
    """What the command writes to stdout when stdout is a terminal (a pseudo-terminal here)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mlxspec", *args], stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_speculative_bad_input(hf_window_dir, tmp_path):
    other = tmp_path / "other"  # a draft whose tokenizer cannot be read
    shutil.copytree(hf_window_dir, other)
    (other / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    cases = [
        (["--draft", str(other)], "cannot load tokenizer"),
        (["--draft", str(hf_window_dir), "-k", "0"], "--num-draft-tokens must be in 1..64"),
        (["--draft", str(hf_window_dir), "--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--pair", str(tmp_path)], "no pair.json"),
    ]
    for extra, message in cases:
        args = ["generate", "-p", "hi", *extra] if "--pair" in extra else ["generate", "-m", str(hf_window_dir), "-p", "hi", *extra]
        res = run(*args)
        lines = [l for l in res.stderr.strip().splitlines() if not l.startswith("warning:")]
        assert res.returncode != 0 and len(lines) == 1 and message in lines[0], res.stderr
        assert "Traceback" not in res.stderr
