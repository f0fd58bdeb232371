"""A request is one type: every `GenerationOptions` field is accepted by every generating
command's parser (but the ones a command names as meaningless for it), by the server's JSON
and by the library's calls, and a wrong value gives the same one-line message everywhere."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

import pytest
import typer

import mlxspec
from mlxspec import GenerationOptions, Session, cli
from mlxspec.arguments import run
from mlxspec.engine.options import option_names
from mlxspec.errors import InputError
from mlxspec.serve import request as rq
from test_speculative import FixedTimings, tiny

COMMANDS = {"generate": (), "chat": ("n",), "serve": ("logprobs", "response_format", "n"),
            "demo": ("logprobs", "response_format", "n"),
            "bench": ("temperature", "seed", "stop", "logprobs", "response_format", "n")}  # what makes no sense for each
GOOD = {"max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "min_p": 0.1, "repetition_penalty": 1.1,
        "repetition_context": 8, "presence_penalty": 0.5, "frequency_penalty": 0.25, "logit_bias": {"3": 2.0},
        "seed": 7, "stop": ["xyz"], "logprobs": 2, "response_format": {"type": "json_object"}, "n": 3}
# a wrong value per field: (as the library and the JSON give it, as a command line gives it, the message)
BAD = {"max_tokens": (-1, "-1", "max_tokens must be >= 0, got -1"),
       "temperature": (-1.0, "-1", "temperature must be a finite number >= 0 (0 = greedy), got -1.0"),
       "top_p": (1.5, "1.5", "top_p must be in (0, 1], got 1.5"),
       "top_k": (-2, "-2", "top_k must be >= 0 (0 disables it), got -2"),
       "min_p": (2.0, "2", "min_p must be in [0, 1) (0 disables it), got 2.0"),
       "repetition_penalty": (0.0, "0", "repetition_penalty must be a finite number > 0 (1 disables it), got 0.0"),
       "repetition_context": (0, "0", "repetition_context must be an integer in 1..4096, got 0"),
       "presence_penalty": (3.0, "3", "presence_penalty must be in -2..2 (0 disables it), got 3.0"),
       "frequency_penalty": (-3.0, "-3", "frequency_penalty must be in -2..2 (0 disables it), got -3.0"),
       "logit_bias": ({"5": 500}, "5=500", "logit_bias: the bias of token 5 must be a number in -100..100, got 500.0"),
       "seed": (-5, "-5", "seed must be in 0..2**64-1 (or -1 for a random one), got -5"),
       "stop": ([""], "", "a stop string is empty"),
       "logprobs": (50, "50", "logprobs must be in 0..20, got 50"),
       "response_format": ({"type": "xml"}, '{"type": "xml"}',
                           "response_format.type must be one of text, json_object, json_schema, grammar, regex, got 'xml'"),
       "n": (0, "0", "n must be an integer in 1..16, got 0")}


def test_the_table_covers_every_field():
    assert set(GOOD) == set(BAD) == set(option_names())


def flags(command: str) -> set[str]:
    click_command = typer.main.get_command(cli.app).commands[command]
    return {flag for param in click_command.params for flag in param.opts}


def field_flag(name: str) -> str:
    f = next(f for f in fields(GenerationOptions) if f.name == name)
    return (f.metadata["flags"] or ("--" + name.replace("_", "-"),))[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_parses_every_option_that_makes_sense_for_it(command):
    have = flags(command)
    for name in option_names():
        assert (field_flag(name) in have) == (name not in COMMANDS[command]), (command, name)


@pytest.mark.parametrize("command, name", [(c, n) for c in sorted(COMMANDS) for n in sorted(BAD)
                                           if n not in COMMANDS[c]])
def test_a_wrong_value_is_the_same_line_on_every_command_line(command, name, capsys, tmp_path):
    extra = ["--draft", "ngram"] if command == "bench" else []
    prompt = ["-p", "hi"] if command == "generate" else []
    missing = str(tmp_path / "no-model")  # the options are checked before anything loads
    argv = [command, *prompt, *(["--model", missing] if command != "demo" else []), *extra,
            field_flag(name), BAD[name][1]]
    assert run(cli.app, argv) != 0
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {BAD[name][2]}"]


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_wrong_value_is_the_same_message_in_the_library_and_the_server(name):
    session = Session(tiny(1, vocab=16), None, calibration=FixedTimings())
    value, _, message = BAD[name]
    with pytest.raises(InputError) as raised:
        session.request([1, 2], **{name: value})
    assert str(raised.value) == message
    with pytest.raises(InputError) as raised:
        rq.asked({name: value}, GenerationOptions(), chat=False)
    assert str(raised.value) == message


def test_the_server_maps_every_field_and_openais_spellings():
    defaults = GenerationOptions(max_tokens=512, temperature=1.0)
    for name in option_names():
        body = {name: GOOD[name]}
        assert getattr(rq.asked(body, defaults, chat=False).options, name) == GenerationOptions(**body).__dict__[name]
    chat = rq.asked({"max_completion_tokens": 9, "logprobs": True, "top_logprobs": 4,
                     "repetition_context_size": 5}, defaults, chat=True)
    assert (chat.options.max_tokens, chat.options.logprobs, chat.options.repetition_context) == (9, 4, 5)
    assert chat.options.temperature == 1.0  # the server's default where the body sets none
    assert rq.asked({"messages": [], "stream": True, "user": "x"}, defaults, chat=True).options == defaults


def test_the_library_calls_take_every_option():
    target = tiny(2, vocab=16)
    session = Session(target, None, calibration=FixedTimings())
    for name in option_names():
        assert getattr(session.request([1, 2], **{name: GOOD[name]}).options, name) == \
            getattr(GenerationOptions(**{name: GOOD[name]}), name)
    for call in (mlxspec.stream_generate, mlxspec.generate, Session.stream, Session.generate, Session.chat,
                 Session.stream_chat, Session.batch_generate, Session.request):
        parameters = inspect.signature(call).parameters
        assert "options" in parameters and any(p.kind is p.VAR_KEYWORD for p in parameters.values()), call
    options = GenerationOptions(max_tokens=4, stop=["never"])
    assert mlxspec.generate(target, None, [1, 2], options) == mlxspec.generate(target, None, [1, 2], max_tokens=4)
    with pytest.raises(InputError, match="unknown option 'temprature'"):
        session.request([1, 2], temprature=0.5)


def test_logit_bias_forces_and_bans_tokens():
    target = tiny(3, vocab=16)
    plain = [s.token for s in Session(target, None).stream([1, 2], max_tokens=6)]
    forced = [s.token for s in Session(target, None).stream([1, 2], max_tokens=6, logit_bias={11: 100})]
    assert forced == [11] * 6
    banned = [s.token for s in Session(target, None).stream([1, 2], max_tokens=6, logit_bias={plain[0]: -100})]
    assert banned[0] != plain[0]
    with pytest.raises(InputError, match="outside the vocabulary"):
        Session(target, None).request([1, 2], logit_bias={16: 1})
    assert GenerationOptions(logit_bias="3=1.5, 4=-2").logit_bias == GenerationOptions(
        logit_bias=json.dumps({"4": -2, "3": 1.5})).logit_bias == ((3, 1.5), (4, -2.0))


@pytest.mark.parametrize("key", ["\u00b2", "9" * 5000, "1_0", "abc"])
def test_a_logit_bias_key_int_cannot_read_is_an_input_error(key):
    with pytest.raises(InputError, match="token id must be an integer"):
        GenerationOptions(logit_bias={key: 1.0})
