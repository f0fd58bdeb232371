"""The standard streams as the command line needs them, however it was started.

A program started with a standard descriptor closed (`<&-`, `>&-`, `2>&-`: cron jobs and
daemons do this) hands that number to the next file it opens: weights opened as
descriptor 0 were then read as standard input by MLX's loader, or a file opened as 1 or 2
would receive whatever is printed. So before anything opens a file, each closed descriptor
0, 1, 2 is reopened on the null device; Python's own `sys.stdin` stays None when standard
input was closed, so that reading a prompt from it can say so.
"""

from __future__ import annotations

import os
import sys

from .errors import InputError
from .reading import STDIN_LIMIT, read_stream

STANDARD_DESCRIPTORS = (0, 1, 2)


def reopen_closed_descriptors() -> list[int]:
    """Reopen every closed standard descriptor on the null device (read-write); the ones that were closed."""
    reopened = []
    for fd in STANDARD_DESCRIPTORS:
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:  # the lower ones are open by now, so this is rare (e.g. fd 0 closed by a thread)
            os.dup2(null, fd)
            os.close(null)
        reopened.append(fd)
    return reopened


def usable_streams() -> None:
    """Safe standard streams: closed descriptors reopened (above), Python's missing stdout and
    stderr written to the null device, and text a terminal's encoding cannot show escaped
    instead of failing (PYTHONIOENCODING=ascii)."""
    reopen_closed_descriptors()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w"))
        elif hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def read_stdin(instead: str) -> bytes:
    """All of standard input; one `InputError` when it is closed or cannot be read (a
    folder, a descriptor open for writing only), saying to use `instead`."""
    if sys.stdin is None:
        raise InputError(f"standard input is closed; {instead}")
    try:
        return read_stream(sys.stdin.buffer, STDIN_LIMIT, "standard input")
    except (OSError, ValueError) as exc:  # ValueError: the stream was closed from Python
        raise InputError(f"cannot read standard input ({_reason(exc)}); {instead}") from None


def _reason(exc: Exception) -> str:
    """What went wrong, in a few words: the system's message for an OSError."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
