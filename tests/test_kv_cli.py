"""`--kv-bits`/`--kv-group-size` as a user gives them: `generate` and `serve` decode with
quantized caches and give the library's text; a value no cache can take, or a group size
that does not divide the model's head_dim, is one `error:` line."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlxspec
from conftest import make_hf_checkpoint
from serving import MODEL, Server, free_port

NO_FIT = "error: kv_group_size 32 does not divide the model's head_dim 16; no group size fits it: run without kv_bits"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


@pytest.fixture(scope="module")
def head_dim_32(tmp_path_factory, hf_tokenizer_dir) -> tuple[Path, Path]:
    """A windowed target and a draft whose heads are 32 wide (two heads of a 64-wide model)."""
    target = make_hf_checkpoint(tmp_path_factory.mktemp("kv-target"), hf_tokenizer_dir, seed=6, num_attention_heads=2,
                                sliding_window=8)
    draft = make_hf_checkpoint(tmp_path_factory.mktemp("kv-draft"), hf_tokenizer_dir, seed=7, num_attention_heads=2,
                               num_hidden_layers=1, sliding_window=8)
    return target, draft


@pytest.mark.parametrize("args, message", [
    (["--kv-bits", "5"], "error: --kv-bits must be 4 or 8, got 5"),
    (["--kv-bits", "4", "--kv-group-size", "48"], "error: --kv-group-size must be one of 32, 64, 128, got 48"),
])
def test_a_value_no_cache_takes_is_one_line_before_anything_loads(tmp_path, args, message):
    for command in (["generate", "-p", "hi"], ["serve", "--port", str(free_port())]):
        res = run(*command, "--model", str(tmp_path / "no-such-model"), *args)
        assert res.returncode != 0 and res.stderr.strip() == message, res.stderr


def test_a_group_size_that_does_not_divide_head_dim_is_one_line(hf_window_dir):
    res = run("generate", "-m", str(hf_window_dir), "-p", "hi", "--kv-bits", "8", "--kv-group-size", "32")
    assert res.returncode != 0
    assert res.stderr.strip() == NO_FIT


def test_generate_with_a_quantized_cache_gives_the_librarys_text(head_dim_32):
    target, draft = head_dim_32
    res = run("generate", "-m", str(target), "-d", str(draft), "-p", "Once upon a time", "-n", "24", "--json",
              "--no-adaptive", "-k", "3", "--kv-bits", "4", "--kv-group-size", "32")
    assert res.returncode == 0, res.stderr
    model, tokenizer = mlxspec.load(str(target))
    expect = mlxspec.Session(model, tokenizer, kv_bits=4, kv_group_size=32).generate("Once upon a time", max_tokens=24)
    plain = mlxspec.Session(model, tokenizer).generate("Once upon a time", max_tokens=24)
    out = json.loads(res.stdout)
    assert out["text"] == expect and out["drafted"] > 0
    assert expect != plain  # the 4-bit cache changes this text: the comparison can fail


def test_chat_keeps_its_history_in_quantized_caches(head_dim_32, hf_tokenizer_dir, tmp_path):
    """Two turns of `mlxspec chat --kv-bits 4` (a target without a window: the whole history
    stays cached): the second reuses the first's cache, and both answers equal the
    library's over the same 4-bit caches."""
    target = make_hf_checkpoint(tmp_path / "full", hf_tokenizer_dir, seed=8, num_attention_heads=2,
                                sliding_window=None, rope_theta=1e6)
    draft = head_dim_32[1]
    done = subprocess.run([sys.executable, "-m", "mlxspec", "chat", "--model", str(target), "--draft", str(draft),
                           "-n", "8", "-v", "--kv-bits", "4", "--kv-group-size", "32"], input="Hello there\nAnd then?\n",
                          capture_output=True, text=True, env=dict(os.environ, MLXSPEC_CACHE=str(tmp_path)), timeout=300)
    assert done.returncode == 0, done.stderr
    model, tokenizer = mlxspec.load(str(target))
    local = mlxspec.Session(model, tokenizer, kv_bits=4, kv_group_size=32)
    first = local.chat([{"role": "user", "content": "Hello there"}], max_tokens=8, speculative=False)
    second = local.chat([{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": first},
                         {"role": "user", "content": "And then?"}], max_tokens=8, speculative=False)
    assert done.stdout.split("\n")[:2] == [first, second]
    cached = [int(line.split()[2]) for line in done.stderr.splitlines() if line.startswith("prompt cache:")]
    assert len(cached) == 2 and cached[1] > 0


pytest.importorskip("openai")
pytest.importorskip("uvicorn")


def test_the_server_decodes_with_a_quantized_cache(head_dim_32, tmp_path):
    target, draft = head_dim_32
    server = Server(target, "--draft", str(draft), "--no-adaptive", "-k", "3", "--kv-bits", "8", "--kv-group-size",
                    "32", cache=tmp_path)
    try:
        model, tokenizer = mlxspec.load(str(target))
        local = mlxspec.Session(model, tokenizer, kv_bits=8, kv_group_size=32)
        prompts = [f"Question {i}: what comes after {i * 7}?" for i in range(4)]

        def ask(prompt: str) -> str:
            done = server.client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
            return done.choices[0].text

        with cf.ThreadPoolExecutor(4) as pool:  # together: rows of one batch
            replies = list(pool.map(ask, prompts))
        assert replies == [local.generate(p, max_tokens=20, speculative=False) for p in prompts]
    finally:
        server.stop()


def test_the_server_refuses_a_group_size_the_model_cannot_take(hf_full_dir):
    res = run("serve", "-m", str(hf_full_dir), "--port", str(free_port()), "--kv-bits", "4", "--kv-group-size", "32")
    assert res.returncode != 0
    assert res.stderr.strip() == NO_FIT


def test_bench_measures_over_quantized_caches_and_says_so(head_dim_32, tmp_path):
    target, draft = head_dim_32
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\n")
    res = run("bench", "-m", str(target), "-d", str(draft), "--prompts", str(prompts), "-n", "4", "--temperatures", "0",
              "-k", "1", "--repeats", "1", "--no-adaptive", "--no-plots", "--kv-bits", "8", "--kv-group-size", "32",
              "-o", str(tmp_path / "report"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["kv_cache"] == "8-bit, groups of 32 (mlxspec's runs)"
    assert "KV cache: 8-bit, groups of 32" in (tmp_path / "report" / "report.md").read_text()
