"""Reading what a user hands mlxspec, bounded. A file read whole (a configuration, a
tokenizer, a chat template, a prompts file, the calibration cache) must be a regular file of
at most a stated size: a pipe or a device (`/dev/zero`) may never end or block forever, and
a sparse file of many gigabytes would exhaust memory before any check could run. Standard
input is read up to a stated size too. A refusal is an `OSError` naming the file, as the
read itself would raise, so each caller's own message says what and where."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

MIB = 2**20
JSON_LIMIT = 64 * MIB  # config.json, tokenizer_config.json, pair.json, a chat template...
TOKENIZER_LIMIT = 1024 * MIB  # tokenizer.json / tokenizer.model: tens of MiB at most in practice
PROMPTS_LIMIT = 256 * MIB  # a prompts file of bench or distill
STDIN_LIMIT = 64 * MIB  # a prompt on standard input: far beyond any model's context


def regular_file(path: Path, limit: int | None = None) -> int:
    """The size of `path` (links followed), checked to be a regular file of at most `limit`
    bytes; `OSError` otherwise."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    if limit is not None and info.st_size > limit:
        raise OSError(errno.EFBIG, f"over {limit // MIB} MiB, more than such a file holds", str(path))
    return info.st_size


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes (`regular_file`)."""
    regular_file(path, limit)
    with open(path, "rb") as f:
        return read_stream(f, limit, str(path))


def read_stream(stream: BinaryIO, limit: int, name: str) -> bytes:
    """Everything `stream` holds, when that is at most `limit` bytes; `OSError` otherwise."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"over {limit // MIB} MiB, more than mlxspec reads", name)
    return data
