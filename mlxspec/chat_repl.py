"""`mlxspec chat`: a conversation on the terminal that outlives its mistakes.

A line is a message to the model; a line that begins with "/" is a command (`COMMANDS`):
one that is not a command lists them and sends nothing ("//" sends a message that begins
with "/"). Whatever goes wrong with one message (a line too long or not UTF-8, a
conversation grown past the model's context, any other refused request) is one `error:`
line, then the prompt again, the conversation as it was. Ctrl-C while a reply is written
stops that reply (what was written stays in the conversation); Ctrl-C at the prompt
leaves with 130, the end of input (Ctrl-D) with 0.

A conversation that outgrows the context is never cut behind the user's back (llama.cpp's
context shift and LM Studio's rolling window drop the oldest turns unasked): the message is
not sent, the error says so, and /drop (forget the oldest exchanges) or /reset makes room.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import typer

from .chat_input import UnreadableInput, line_limit, read_line
from .console import error_line, stats_line, write_step
from .engine import GenerationOptions, GenerationStats, Session
from .errors import ContextError, InputError, MlxspecError
from .validate import int_text

COMMANDS = (("/help", "this list"),
            ("/reset, /clear", "forget the conversation (the system prompt stays)"),
            ("/system TEXT", "set the system prompt and forget the conversation (/system alone removes it)"),
            ("/drop [N]", "forget the oldest N exchanges (1 if not given): room when the conversation outgrows "
                          "the model's context"),
            ("/history", "show the conversation"),
            ("/exit, /quit", "leave (so does Ctrl-D; Ctrl-C stops a reply, and at the prompt leaves)"),
            ("//TEXT", "send a message that begins with /"))
SHORT_HELP = "/help lists the commands, /exit or Ctrl-D leaves, Ctrl-C stops a reply"


@dataclass
class Conversation:
    """The system prompt and the exchanges so far (user, assistant, user, ...)."""

    system: Optional[str] = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, message: Optional[str] = None) -> list[dict[str, str]]:
        """What the model reads: the system prompt, the turns, then `message` if given."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": message}] if message is not None else []
        return head + self.turns + tail


def chat_loop(session: Session, system: Optional[str], options: GenerationOptions, colour: bool, verbose: bool) -> None:
    """Read a line, answer it (streamed), until end of input, /exit or Ctrl-C at the prompt."""
    conversation, limit = Conversation(system or None), line_limit(session)
    typer.echo(f"chat with {session.target.args.model_type or 'the model'}: {SHORT_HELP}", err=True)
    while True:
        try:
            line = read_line(limit)
            if line is None:  # end of input
                typer.echo("", err=True)
                return
            if not handle(line, session, conversation, options, colour, verbose):
                return
        except UnreadableInput:
            raise
        except MlxspecError as exc:  # this message only: the conversation goes on
            error_line(exc)


def handle(line: str, session: Session, conversation: Conversation, options: GenerationOptions, colour: bool,
           verbose: bool) -> bool:
    """Carry out one line: a command, or a message answered. False: leave."""
    text = line.strip()
    if not text:
        return True
    if text.startswith("/") and not text.startswith("//"):
        name, _, rest = text.partition(" ")
        command = _COMMANDS.get(name)
        if command is None:
            commands = ", ".join(usage for usage, _ in COMMANDS)
            typer.echo(f"unknown command {name} (nothing was sent); the commands: {commands}", err=True)
            return True
        return command(conversation, rest.strip())
    say(session, conversation, line.lstrip()[1:] if text.startswith("//") else line, options, colour, verbose)
    return True


def say(session: Session, conversation: Conversation, message: str, options: GenerationOptions, colour: bool,
        verbose: bool) -> None:
    """Send `message` after the conversation and stream the reply; the exchange joins the
    conversation unless the request is refused or Ctrl-C stops it before any text."""
    with ctrl_c_stops_the_reply() as stopped:
        try:
            steps = session.stream_chat(conversation.messages(message), options)
        except ContextError as exc:
            raise ContextError(_overflow(exc, conversation)) from None
        reply, stats = stream_reply(steps, colour, stopped)
    if stopped() and not reply:
        typer.echo("(stopped before the reply began: the message was not kept)", err=True)
        return
    conversation.turns += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
    if stopped():
        typer.echo("(stopped)", err=True)
    if stats is not None:
        _after_reply(session, stats, verbose)


def stream_reply(steps: Iterator[Any], colour: bool, stopped: Callable[[], bool]) -> tuple[str, GenerationStats | None]:
    """Write the reply's steps as they come until it ends or `stopped()`; its text and stats."""
    text, stats = [], None
    try:
        for step in steps:
            if stopped():
                break
            write_step(step, colour)
            text.append(step.text)
            stats = step.stats
    finally:
        getattr(steps, "close", lambda: None)()  # the session keeps what was computed (its prompt cache)
        sys.stdout.write("\n")
        sys.stdout.flush()
    return "".join(text), stats


@contextmanager
def ctrl_c_stops_the_reply() -> Iterator[Callable[[], bool]]:
    """Inside: Ctrl-C marks the reply stopped (read between steps, so the session is never cut
    in the middle of one); a second Ctrl-C interrupts at once. Yields the mark's reader."""
    hits: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        if hits:
            raise KeyboardInterrupt
        hits.append(signum)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


def _overflow(exc: ContextError, conversation: Conversation) -> str:
    """The context error, saying what was kept and how to make room."""
    if not conversation.turns:
        return f"this message does not fit in the model's context ({exc}); it was not sent"
    return (f"the conversation has outgrown the model's context ({exc}); the message was not sent and the "
            f"conversation is kept: /drop forgets the oldest exchange, /reset all of it")


def _after_reply(session: Session, stats: GenerationStats, verbose: bool) -> None:
    """The stats with `verbose`; a note when the reply ran into the end of the context."""
    if verbose:
        typer.echo(f"prompt cache: {stats.prompt_cached_tokens} of {stats.prompt_tokens} prompt tokens reused\n"
                   + stats_line(stats), err=True)
    context = session.target.args.max_position_embeddings
    if context is not None and stats.prompt_tokens + stats.generation_tokens > context:
        typer.echo(f"(the reply stopped at the end of the model's context of {context} tokens: /drop or /reset "
                   "makes room)", err=True)


def _leave(conversation: Conversation, rest: str) -> bool:
    return False


def _help(conversation: Conversation, rest: str) -> bool:
    width = max(len(usage) for usage, _ in COMMANDS)
    typer.echo("\n".join(f"{usage:<{width}}  {what}" for usage, what in COMMANDS), err=True)
    return True


def _reset(conversation: Conversation, rest: str) -> bool:
    conversation.turns.clear()
    typer.echo("(conversation cleared)", err=True)
    return True


def _system(conversation: Conversation, rest: str) -> bool:
    conversation.system, conversation.turns = rest or None, []
    typer.echo("(system prompt set; conversation cleared)" if rest else "(system prompt removed; conversation cleared)",
               err=True)
    return True


def _drop(conversation: Conversation, rest: str) -> bool:
    exchanges = len(conversation.turns) // 2
    n = int_text(rest or "1")
    if n is None or n < 1:
        raise InputError(f"/drop takes a number of exchanges (1 or more), got {rest[:40]!r}")
    if n > exchanges:
        raise InputError(f"/drop {n}: the conversation holds {exchanges} exchange{'' if exchanges == 1 else 's'}")
    del conversation.turns[:2 * n]
    typer.echo(f"(forgot the oldest {n} exchange{'' if n == 1 else 's'}; {exchanges - n} left)", err=True)
    return True


def _history(conversation: Conversation, rest: str) -> bool:
    for message in conversation.messages():
        typer.echo(f"{message['role']}: {message['content']}")
    if not conversation.messages():
        typer.echo("(the conversation is empty)", err=True)
    return True


_COMMANDS: dict[str, Callable[[Conversation, str], bool]] = {
    "/exit": _leave, "/quit": _leave, "/help": _help, "/reset": _reset, "/clear": _reset, "/system": _system,
    "/drop": _drop, "/history": _history}
