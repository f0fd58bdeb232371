"""What the command line shows: one `error:` line per failure, warnings as one line,
progress on stderr, streamed text with draft tokens coloured (on a terminal only), and the
stats line. Nothing here decides anything about generation."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any, Callable, Iterator, TextIO

import typer

from .engine import GenerationStats, GenerationStep, SpeculativeStats
from .errors import MlxspecError
from .interrupts import exit_code

DRAFT_COLOUR, RESET = "\033[32m", "\033[0m"


def friendly_errors(command: Callable) -> Callable:
    """Turn mlxspec's errors into one `error:` line on stderr and a non-zero exit code, and
    warnings into one `warning:` line each."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _warning_line
        try:
            return command(*args, **kwargs)
        except MlxspecError as exc:
            error_line(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`interrupts.Terminated`)
            typer.echo("interrupted", err=True)
            raise typer.Exit(exit_code(exc)) from None

    return wrapper


def _warning_line(message: Warning | str, category: type, filename: str, lineno: int, file: TextIO | None = None,
                  line: str | None = None) -> None:
    typer.echo(f"warning: {one_line(message)}", err=True)


def error_line(message: object) -> None:
    """Write `error: MESSAGE` on stderr, always as one line."""
    typer.echo(f"error: {one_line(message)}", err=True)


def one_line(message: object) -> str:
    """`message` as one printable line: a line break or other control character in it (a
    newline in a file name, a lone surrogate from undecodable bytes) written as its escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(message))


def colours(stream: TextIO, wanted: bool) -> bool:
    """Colour only when asked, on a terminal, and NO_COLOR unset."""
    return wanted and stream.isatty() and not os.environ.get("NO_COLOR")


def write_step(step: GenerationStep, colour: bool) -> None:
    """Write one step's text to stdout now, green when it came from the draft and `colour`."""
    sys.stdout.write(f"{DRAFT_COLOUR}{step.text}{RESET}" if colour and step.from_draft and step.text else step.text)
    sys.stdout.flush()


def stream_text(steps: Iterator[GenerationStep], colour: bool) -> tuple[str, GenerationStats | None]:
    """Write each step's text to stdout as it arrives; the whole text and the last stats."""
    text, stats = [], None
    for step in steps:
        stats = step.stats
        text.append(step.text)
        write_step(step, colour)
    return "".join(text), stats


def stats_line(stats: GenerationStats) -> str:
    """Prompt and generation speed, peak memory; for speculation, what the draft did."""
    line = (f"prompt: {stats.prompt_tokens} tokens, {stats.prompt_tps:.1f} tok/s | "
            f"generation: {stats.generation_tokens} tokens, {stats.generation_tps:.1f} tok/s | "
            f"peak memory: {stats.peak_memory_gb:.3f} GB")
    if isinstance(stats, SpeculativeStats):
        line += (f"\nspeculative: acceptance {stats.acceptance_rate:.2f}, {stats.tokens_per_round:.2f} tokens/round, "
                 f"{stats.rounds} rounds, draft {stats.draft_time:.2f} s / target {stats.target_time:.2f} s, "
                 f"draft lengths {dict(sorted(stats.k_counts.items()))}, drafter: {stats.draft_mode}")
    return line


def calibration_progress(quiet: bool = False) -> Callable[[int, int], None]:
    """A progress callback for the calibration: a bar on a terminal's stderr, else one line."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if quiet:
            return
        if "started" not in state:
            state["started"] = True
            typer.echo("calibrating: timing rounds of this pair on this device (once; cached)", err=True)
        if sys.stderr.isatty():
            filled = 30 * done // total
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} rounds")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return update


def byte_bars(quiet: bool, labels: list[str]) -> tuple[dict[str, Callable[[int, int, str], None]], Callable[[], None]]:
    """Per-label byte progress bars on a terminal's stderr (none with --quiet or when piped)."""
    if quiet or not sys.stderr.isatty():
        return {}, lambda: None
    bars: dict[str, Any] = {}

    def make(label: str) -> Callable[[int, int, str], None]:
        def update(done: int, total: int, name: str) -> None:
            if label not in bars:
                bars[label] = typer.progressbar(length=total, label=label, file=sys.stderr, show_pos=False)
                bars[label].__enter__()
            bar = bars[label]
            bar.update(done - bar.pos)

        return update

    def close() -> None:
        for bar in bars.values():
            bar.__exit__(None, None, None)

    return {label: make(label) for label in labels}, close
