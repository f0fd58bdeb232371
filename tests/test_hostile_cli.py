"""What a hostile user found in the commands' arguments and runs (every command but
`serve`), each case stated as the contract it broke: bad input is exactly one `error:` line
and a non-zero exit (never an internal error, a second line or a hang), and a stop leaves
nothing half-written and an honest exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hostile_inputs import endless, one_error_line, tiny_model
from mlxspec.chat_input import UnreadableInput, read_line
from mlxspec.chat_repl import Conversation, _drop
from mlxspec.errors import InputError

LONG = "9" * 5000  # more digits than Python's int() converts (4300)
# `mlxspec convert` whose writer, once done, waits: a stop then lands mid-conversion
SLOW_CONVERT = """
import sys, time
from mlxspec.cli import main
converter = sys.modules[main.__module__.replace("cli", "convert.converter")]
real = converter.write_model
def slow(source, folder, *args):
    real(source, folder, *args)
    print("written", flush=True)
    time.sleep(120)
converter.write_model = slow
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny random Mistral in HF layout with the real tokenizer."""
    return tiny_model(tmp_path_factory.mktemp("hostile") / "model")


@pytest.mark.parametrize("argv, message", [
    (["generate", "-p", "hi", "-m", "x", "--logit-bias", f"{LONG}=1"], "a token id must be an integer >= 0"),
    (["generate", "-p", "hi", "-m", "x", "--logit-bias", f'{{"1": {LONG}}}'], "not a usable JSON object"),
    (["generate", "-p", "hi", "-m", "x", "--logit-bias", "\u00b2=1"], "a token id must be an integer >= 0"),
    (["bench", "--demo", "-k", LONG], "every k must be in 1..64"),
    (["bench", "--demo", "-k", f"1..{LONG}"], "every k must be in 1..64"),
], ids=["bias id", "bias json value", "bias superscript id", "bench k", "bench k range"])
def test_integers_python_cannot_convert_are_one_error_line(argv, message, capsys):
    assert message in one_error_line(argv, capsys)


@pytest.mark.parametrize("rest", [LONG, "\u00b2", "-1", "0", "x"])
def test_chat_drop_refuses_what_is_not_a_count(rest):
    conversation = Conversation(None, ["q", "a"])
    with pytest.raises(InputError, match="/drop takes a number of exchanges"):
        _drop(conversation, rest)
    assert conversation.turns == ["q", "a"]


@pytest.mark.parametrize("argv", [
    ["generate", "-p", "hi", "-m", "{tmp}/a\nb"],
    ["generate", "-p", "hi", "-m", "{tmp}/a\u2028b\x85c\rd"],
    ["convert", "{tmp}/no\nsuch", "-o", "{tmp}/out"],
], ids=["newline in a path", "other line breaks in a path", "newline in a source"])
def test_an_error_naming_a_line_break_stays_one_line(argv, tmp_path, capsys):
    line = one_error_line([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert "\\n" in line or "\\u2028" in line


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_conversion_leaves_nothing_and_says_so(stop, code, model, tmp_path):
    process = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT, "convert", str(model), "-o", str(tmp_path / "out"),
                                "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert process.stdout.readline() == "written\n"  # the weights are in the temporary folder
    assert [p.name for p in tmp_path.iterdir() if "mlxspec-tmp" in p.name]
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code and err.strip().splitlines() == ["interrupted"], err
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder, no lock


@pytest.fixture
def zeros_on_stdin(tmp_path, monkeypatch) -> None:
    """Standard input holding 65 MiB of NUL bytes and no line end: `< /dev/zero` as far as
    mlxspec may read (a finite file, so that a build that reads on fails instead of hanging)."""
    endless(tmp_path / "zeros", "sparse")
    os.truncate(tmp_path / "zeros", 65 * 2**20)
    monkeypatch.setattr(sys, "stdin", open(tmp_path / "zeros"))


def test_standard_input_that_never_ends_is_one_error_line(zeros_on_stdin, capsys):
    assert "cannot read standard input (over 64 MiB" in one_error_line(["generate", "-p", "-", "-m", "x"], capsys)


def test_a_chat_line_that_never_ends_ends_the_chat(zeros_on_stdin):
    with pytest.raises(UnreadableInput, match="no end to it"):
        read_line(100)


@pytest.mark.parametrize("argv, message", [
    (["generate", "-p", "hi", "-m", "{model}", "--stop", "caf\udce9"], "a stop string is not valid UTF-8"),
    (["chat", "-m", "{model}", "--system", "caf\udce9"], "the --system argument is not valid UTF-8"),
], ids=["stop", "chat system"])
def test_text_options_of_undecodable_bytes_are_one_error_line(argv, message, model, capsys):
    line = one_error_line([a.replace("{model}", str(model)) for a in argv], capsys)
    assert message in line and "the byte 0xe9" in line


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_the_process_exits_keeps_the_commands_exit_status(stop):
    script = ("import atexit, os, sys\nfrom mlxspec.cli import main\n"
              f"atexit.register(lambda: os.kill(os.getpid(), {int(stop)}))  # arrives during the shutdown\n"
              "main(sys.argv[1:])\n")
    res = subprocess.run([sys.executable, "-c", script, "generate", "-p", "hi", "-m", "x", "-n", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == ["error: max_tokens must be >= 0, got -1"]
