"""What a hostile user found in every command but `serve`, each case stated as the contract
it broke: bad input is exactly one `error:` line and a non-zero exit (never an internal
error, a second line or a hang), and nothing is lost (nothing written through a link,
nothing deleted that mlxspec did not write, no half-written output left by a stop)."""

from __future__ import annotations

import pytest

import mlxspec.cli as cli
from mlxspec.arguments import run
from mlxspec.chat_repl import Conversation, _drop
from mlxspec.errors import InputError

LONG = "9" * 5000  # more digits than Python's int() converts (4300)


def one_error_line(argv: list[str], capsys) -> str:
    """Run the command line in this process; its one `error:` line (asserted)."""
    code = run(cli.app, argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in lines[0], err
    return lines[0]


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
