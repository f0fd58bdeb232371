"""A stop asked from outside (SIGTERM: `kill`, a service manager, a CI job's timeout) ends a
command as Ctrl-C does, where the default action would end the process on the spot: the
work in hand unwinds, so its cleanups run (a half-written output folder and its lock
removed, a distillation's work folder kept only when it can be resumed), then one line and
exit status 143 (128 + SIGTERM). A second SIGTERM ends the process at once, as by default.
Once the command is over, a stop arriving while the interpreter shuts down is ignored, so
that the exit status stays the command's instead of becoming a signal's."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the main thread is when it arrives (a `KeyboardInterrupt`,
    so that it unwinds through everything Ctrl-C does)."""


def exit_code(interrupt: BaseException) -> int:
    """The exit status of a command stopped by `interrupt`: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Inside: the first SIGTERM raises `Terminated`; the handler before is restored after."""

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one: at once
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: the default stays
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exiting() -> None:
    """The command is over and the process about to exit: from now on Ctrl-C and SIGTERM
    are ignored (the shutdown takes a moment; either would make the exit status a signal's)."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
