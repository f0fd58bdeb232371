"""The lines of `mlxspec chat`, read so that one bad line costs only itself: a line that is
not UTF-8, or longer than the model's context could ever hold, is consumed whole (never
read on as the next message) and refused with `InputError`; the next line reads as usual.

Piped input is read as bytes (with a cap: a paste of gigabytes without a newline is not
held in memory); a terminal's line comes through `input`, which shows the prompt.
"""

from __future__ import annotations

import errno
import sys
from typing import Optional

from .engine import Session
from .errors import InputError, MlxspecError
from .reading import MIB, STDIN_LIMIT
from .text.unicode import check_text

NO_CONTEXT_LIMIT = 1 << 26  # bytes in a line when the model states no context
CHUNK = 1 << 16


class UnreadableInput(MlxspecError):
    """Standard input cannot be read at all (open for writing only, a device error): the
    chat ends, as at the end of its input, with this one line."""


def line_limit(session: Session) -> int:
    """The most bytes a line may hold: more could not fit in the model's context, whatever
    the tokens (the bound the session itself refuses a prompt by)."""
    context, tokenizer = session.target.args.max_position_embeddings, session.tokenizer
    if context is None or tokenizer is None:
        return NO_CONTEXT_LIMIT
    return (context + 16) * tokenizer.max_piece_bytes


def read_line(limit: int) -> Optional[str]:
    """The next line without its line ending; None at the end of input. `InputError` for a
    line that is not UTF-8 or holds more than `limit` bytes (consumed all the same);
    `UnreadableInput` when standard input cannot be read."""
    try:
        return _read_line(limit)
    except OSError as exc:
        raise UnreadableInput(f"cannot read standard input ({exc.strerror or exc})") from None


def _read_line(limit: int) -> Optional[str]:
    if sys.stdin is None:  # started with standard input closed
        return None
    if sys.stdin.isatty():
        return _typed_line(limit)
    data = sys.stdin.buffer.readline(limit + 1)
    if not data:
        return None
    if len(data) > limit and not data.endswith(b"\n"):
        size = len(data) + _skip_rest_of_line()
        raise InputError(_too_long(size, limit))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"that line is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                         "nothing was sent") from None
    return text.removesuffix("\n").removesuffix("\r")


def _typed_line(limit: int) -> Optional[str]:
    """A line typed at the terminal, after the prompt."""
    try:
        line = input("> ")
    except EOFError:
        return None
    except KeyboardInterrupt:  # leaving: the line ends after the terminal's "^C"
        sys.stderr.write("\n")
        raise
    except UnicodeDecodeError as exc:
        raise InputError(f"that line is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}): nothing was sent") from None
    check_text(line, "that line")  # a terminal read with surrogateescape keeps bad bytes as lone surrogates
    size = len(line.encode("utf-8"))
    if size > limit:
        raise InputError(_too_long(size, limit))
    return line


def _skip_rest_of_line() -> int:
    """Read up to the next line ending (or the end of input); how many bytes were skipped.
    An `OSError` after `STDIN_LIMIT` bytes without one: an input that never ends a line
    (`< /dev/zero`) cannot be a conversation."""
    skipped = 0
    while True:
        chunk = sys.stdin.buffer.readline(CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped
        if skipped > STDIN_LIMIT:
            raise OSError(errno.EFBIG, f"a line of more than {STDIN_LIMIT // MIB} MiB and no end to it")


def _too_long(size: int, limit: int) -> str:
    return f"that line holds {size} bytes, over the {limit} that a message to this model can hold: nothing was sent"
