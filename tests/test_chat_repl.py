"""`mlxspec chat` driven through a pipe: a bad line (not UTF-8, longer than the context
could hold, an unknown /command, a conversation outgrowing the context) costs only itself:
one line on stderr, nothing sent, and the next turn still reads every earlier one (its
reply is the library's for that whole conversation). Ctrl-C stops the reply being written
and keeps what was shown; at the prompt it leaves with 130."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlxspec
from mlxspec.models import ModelArgs
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint

CONTEXT = 128
LONG_TURN = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model with a context of 128 tokens, and the same with a context too long to fill."""
    root = tmp_path_factory.mktemp("chat")
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=32000, max_position_embeddings=CONTEXT, sliding_window=None)
    small = write_random_hf_checkpoint(root / "small", args, seed=3, tokenizer_file=mistral_tokenizer_file())
    endless = root / "endless"
    endless.mkdir()
    for f in small.iterdir():
        (endless / f.name).symlink_to(f)
    config = json.loads((small / "config.json").read_text())
    (endless / "config.json").unlink()
    (endless / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1 << 20}))
    return small, endless


def chat(model: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlxspec", "chat", "--model", str(model), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def history(stdout: str) -> list[tuple[str, str]]:
    """The (role, content) lines /history printed."""
    return [tuple(line.split(": ", 1)) for line in stdout.splitlines() if line.startswith(("user: ", "assistant: "))]


def test_bad_lines_cost_only_themselves_and_later_turns_read_the_whole_conversation(models):
    small, _ = models
    script = b"".join([b"Hello\n", b"\xff\xfe not UTF-8\n", b"word " * 2000 + b"\n", b"/nosuch thing\n",
                       (LONG_TURN + "\n").encode() * 4, b"/drop\n", b"Again\n", b"/history\n"])
    process = chat(small, "-n", "8")
    stdout, stderr = (out.decode() for out in process.communicate(script, timeout=120))
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, stderr
    assert "that line is not UTF-8 text (byte 0xff at offset 0): nothing was sent" in errors[0]
    assert "that line holds 10001 bytes, over the" in errors[1] and "nothing was sent" in errors[1]
    assert "the conversation has outgrown the model's context" in errors[2] and "/drop" in errors[2]
    assert "unknown command /nosuch (nothing was sent); the commands: /help, /reset" in stderr
    assert "(forgot the oldest 1 exchange; 3 left)" in stderr
    kept = history(stdout)
    assert [role for role, _ in kept] == ["user", "assistant"] * 4
    assert [text for role, text in kept if role == "user"] == [LONG_TURN, LONG_TURN, LONG_TURN, "Again"]
    target, tokenizer = mlxspec.load(str(small))
    messages = [{"role": role, "content": text} for role, text in kept[:-1]]
    assert kept[-1][1] == mlxspec.Session(target, tokenizer).chat(messages, max_tokens=8)  # it read all of them


def read_until(stream, marker: bytes, seconds: float = 60) -> bytes:
    """Bytes from `stream`'s pipe until `marker` has come (or fail after `seconds`)."""
    seen, deadline = b"", time.monotonic() + seconds
    while marker not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} within {seconds} s; got {seen[-300:]!r}"
        chunk = os.read(stream.fileno(), 4096)
        assert chunk, f"the chat ended before {marker!r}; got {seen[-300:]!r}"
        seen += chunk
    return seen


def drain(stream, seconds: float = 0.5) -> bytes:
    """What `stream`'s pipe holds now (waiting `seconds` for more after each read)."""
    seen = b""
    while select.select([stream], [], [], seconds)[0] and (chunk := os.read(stream.fileno(), 4096)):
        seen += chunk
    return seen


def test_ctrl_c_stops_the_reply_and_keeps_what_was_shown_then_at_the_prompt_leaves(models):
    _, endless = models
    process = chat(endless, "-n", "1000000")
    try:
        process.stdin.write(b"Hello\n")
        process.stdin.flush()
        shown = read_until(process.stdout, b" ")  # the reply is being written
        process.send_signal(signal.SIGINT)
        read_until(process.stderr, b"(stopped)")
        shown += drain(process.stdout)  # written before "(stopped)": the reply and its line end
        assert shown.endswith(b"\n") and len(shown) > 1
        process.stdin.write(b"/history\n")
        process.stdin.flush()
        listed = read_until(process.stdout, b"user: Hello\nassistant: " + shown)
        process.send_signal(signal.SIGINT)  # waiting at the prompt: leave
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert listed + stdout == b"user: Hello\nassistant: " + shown  # the conversation holds the reply as shown
    assert process.returncode == 130 and stderr.decode().strip() == "interrupted"
