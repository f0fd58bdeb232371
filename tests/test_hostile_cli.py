"""What a hostile user found in every command but `serve`, each case stated as the contract
it broke: bad input is exactly one `error:` line and a non-zero exit (never an internal
error, a second line or a hang), and nothing is lost (nothing written through a link,
nothing deleted that mlxspec did not write, no half-written output left by a stop)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxspec.cli as cli
from mlxspec.arguments import run
from mlxspec.chat_input import UnreadableInput, read_line
from mlxspec.chat_repl import Conversation, _drop
from mlxspec.convert.atomic import atomic_dir, mark, written_by_mlxspec
from mlxspec.errors import InputError, OutputError
from mlxspec.models import ModelArgs
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint

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
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=32000, max_position_embeddings=512, sliding_window=16)
    return write_random_hf_checkpoint(tmp_path_factory.mktemp("hostile") / "model", args,
                                      tokenizer_file=mistral_tokenizer_file())


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


DEAD = 9_999_999  # above Linux's largest pid (2**22): never a live process


def a_folder(path: Path, marked: bool = False) -> Path:
    """A folder holding a file of the user's, with mlxspec's marker if `marked`."""
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    if marked:
        mark(path, "model")
    return path


def test_only_mlxspecs_leftovers_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "out"
    theirs = a_folder(tmp_path / f".out.mlxspec-tmp-{DEAD}")  # a name like mlxspec's, no marker
    ours = a_folder(tmp_path / f".out.mlxspec-tmp-{DEAD - 1}", marked=True)
    odd = a_folder(tmp_path / f".out.mlxspec-tmp-{'9' * 30}", marked=True)  # not a pid: left alone
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (theirs / "notes.txt").read_text() == "mine" and odd.is_dir() and not ours.exists()
    assert written_by_mlxspec(out) and (out / "config.json").exists()


def test_an_output_moved_aside_by_a_killed_force_is_put_back(tmp_path):
    moved = a_folder(tmp_path / f".out.mlxspec-tmp-old-{DEAD}", marked=True)
    with pytest.raises(OutputError, match="already exists; pass --force"):
        with atomic_dir(tmp_path / "out"):
            raise AssertionError("the previous output was not put back")
    assert not moved.exists() and (tmp_path / "out" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("lock", ["link", "text", "pipe", "folder"])
def test_the_lock_is_never_taken_on_what_is_not_mlxspecs(lock, tmp_path):
    victim, path = tmp_path / "victim.txt", tmp_path / ".out.mlxspec-lock"
    victim.write_text("root:x:0:0")
    {"link": lambda: path.symlink_to(victim), "text": lambda: path.write_text("my notes"),
     "pipe": lambda: os.mkfifo(path), "folder": path.mkdir}[lock]()
    with pytest.raises(OutputError, match="lock file"):
        with atomic_dir(tmp_path / "out"):
            raise AssertionError("the lock was taken")
    assert victim.read_text() == "root:x:0:0" and os.path.lexists(path)
    assert path.is_dir() or path.is_symlink() or lock == "pipe" or path.read_text() == "my notes"


def endless(path: Path, kind: str) -> None:
    """Put at `path` what never ends or cannot fit in memory: a pipe (with a safety valve
    that ends it after 30 s, so that a reader blocked on it fails instead of hanging), or a
    sparse file of 50 GB."""
    if path.exists():
        path.unlink()
    if kind == "pipe":
        os.mkfifo(path)
        valve = threading.Timer(30, end_pipe, [path])
        valve.daemon = True
        valve.start()
    else:
        with open(path, "wb") as f:
            f.truncate(50 * 2**30)


def end_pipe(path: Path) -> None:
    """Open the pipe at `path` for writing and close it: a reader blocked on it sees its end."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader (it was refused, as it should be) or the folder is gone
        pass


@pytest.mark.parametrize("name, kind, message", [
    ("tokenizer.model", "pipe", "tokenizer.model: not a regular file"),
    ("model.safetensors", "pipe", "model.safetensors: cannot read (not a regular file)"),
    ("config.json", "sparse", "config.json: over 64 MiB"),
    ("tokenizer_config.json", "sparse", "tokenizer_config.json: over 64 MiB"),
])
def test_a_model_file_that_never_ends_is_one_error_line(name, kind, message, model, tmp_path, capsys):
    copy = shutil.copytree(model, tmp_path / "model")
    endless(copy / name, kind)
    assert message in one_error_line(["generate", "-p", "hi", "-m", str(copy), "-n", "1", "--chat"], capsys)


@pytest.mark.parametrize("command", [["bench", "--demo"], ["distill", "--demo", "-o", "{tmp}/out"]])
def test_a_prompts_file_that_never_ends_is_one_error_line(command, tmp_path, capsys):
    endless(tmp_path / "prompts", "sparse")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--prompts", str(tmp_path / "prompts")]
    assert "over 256 MiB" in one_error_line(argv, capsys)


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


def test_a_pickle_that_never_ends_is_one_error_line(model, tmp_path, capsys):
    copy = shutil.copytree(model, tmp_path / "model")
    (copy / "model.safetensors").unlink()
    endless(copy / "pytorch_model.bin", "pipe")
    line = one_error_line(["convert", str(copy), "-o", str(tmp_path / "out")], capsys)
    assert "pytorch_model.bin: not a regular file" in line and not (tmp_path / "out").exists()


DISTILL = ["--steps", "2", "--max-new", "4", "--seq-len", "16", "--batch", "2", "--head-vocab", "64", "-q"]


@pytest.fixture(scope="module")
def distilled(model, tmp_path_factory) -> Path:
    """The work folder of a finished two-step distillation of `model` (its draft removed,
    so that `--resume` may write it again)."""
    place = tmp_path_factory.mktemp("distilled")
    (place / "prompts.jsonl").write_text("".join(f'"Prompt number {n}."\n' for n in range(10)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXSPEC_CACHE", str(place / "cache"))
        assert run(cli.app, ["distill", "-m", str(model), "-o", str(place / "d"), "--prompts",
                             str(place / "prompts.jsonl"), *DISTILL]) == 0
    shutil.rmtree(place / "d")
    return place / "d.work"


def put(name: str, data: bytes):
    return lambda train: (train / name).write_bytes(data)


def reshaped(train: Path) -> None:
    """weights-2 with every tensor of another shape: a checkpoint of some other draft."""
    tensors = mx.load(str(train / "weights-2.safetensors"))
    mx.save_safetensors(str(train / "weights-2.safetensors"), {k: mx.zeros((3,)) for k in tensors})


@pytest.mark.parametrize("damage, message", [
    (put("state.json", b"{"), "state.json is not readable JSON"),
    (put("state.json", b'{"step": -5, "curve": []}'), "does not hold a step >= 1"),
    (put("weights-2.safetensors", b"12345678"), "weights-2.safetensors: corrupt or truncated safetensors header"),
    (lambda train: (train / "optimizer-2.safetensors").unlink(), "optimizer-2.safetensors: cannot read"),
    (reshaped, "weights-2.safetensors does not fit this draft"),
    (put("data.json", b'{"batches": 1, "head_ids": [1000000000]}'), "data.json does not hold"),
], ids=["state not json", "negative step", "truncated weights", "no optimizer", "weights of another draft",
        "head ids past the vocabulary"])
def test_a_damaged_checkpoint_is_one_error_line_on_resume(damage, message, distilled, model, tmp_path):
    work = shutil.copytree(distilled, tmp_path / "d.work")
    damage(work / "train")
    # a subprocess: head ids past the vocabulary crashed MLX (SIGSEGV), which would end pytest
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "-m", str(model), "-o", str(tmp_path / "d"),
                          "--prompts", str(distilled.parent / "prompts.jsonl"), *DISTILL, "--resume"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MLXSPEC_CACHE": str(distilled.parent / "cache"), "HF_HUB_OFFLINE": "1"})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "the checkpoint to resume is damaged" in lines[0], res.stderr
    assert message in lines[0] and "--force starts the distillation over" in lines[0]


def in_each_batch(pattern: str, damage):
    return lambda answers: [damage(p) for p in answers.glob(f"*/{pattern}")]


@pytest.mark.parametrize("damage", [
    in_each_batch("0*.npz", lambda p: p.write_bytes(p.read_bytes()[:20])),
    in_each_batch("0*.features.npy", lambda p: p.write_bytes(p.read_bytes()[:100])),
    in_each_batch("0*.npz", lambda p: np.savez(p, **{k: np.full_like(v, 10**9) if k == "tokens" else v
                                                   for k, v in dict(np.load(p)).items()})),
], ids=["truncated tokens", "truncated features", "tokens past the vocabulary"])
def test_a_damaged_answers_cache_is_answered_again(damage, distilled, model, tmp_path):
    cache = shutil.copytree(distilled.parent / "cache", tmp_path / "cache")
    damage(cache / "distill-answers")
    # a subprocess: tokens past the vocabulary crashed MLX (SIGSEGV), which would end pytest
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "-m", str(model), "-o", str(tmp_path / "d"),
                          "--prompts", str(distilled.parent / "prompts.jsonl"), *DISTILL], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "MLXSPEC_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and (tmp_path / "d" / "model.safetensors").is_file(), res.stderr


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
