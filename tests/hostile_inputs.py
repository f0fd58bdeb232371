"""Helpers of the hostile-input tests (test_hostile_cli, test_hostile_files): a tiny model,
the one-error-line contract run in this process, and files that never end."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import mlxspec.cli as cli
from mlxspec.arguments import run
from mlxspec.models import ModelArgs
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint


def tiny_model(folder: Path) -> Path:
    """A tiny random Mistral in HF layout with the real tokenizer, written to `folder`."""
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=32000, max_position_embeddings=512, sliding_window=16)
    return write_random_hf_checkpoint(folder, args, tokenizer_file=mistral_tokenizer_file())


def one_error_line(argv: list[str], capsys) -> str:
    """Run the command line in this process; its one `error:` line (asserted)."""
    code = run(cli.app, argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in lines[0], err
    return lines[0]


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
