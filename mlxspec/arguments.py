"""What the command line checks before any work: the prompt's text (UTF-8, from an argument
or standard input), every number of a request, and click's own usage errors, each turned
into one `error:` line. Nothing is loaded or converted before these pass."""

from __future__ import annotations

import math
import os
import sys
from typing import Optional, Sequence

import typer

from .bench import check_numbers
from .console import error_line
from .drafts import check_draft_length
from .engine.request import check_prefill_chunk
from .errors import InputError
from .interrupts import exit_code, sigterm_unwinds
from .standard_streams import read_stdin, usable_streams
from .text.unicode import check_text, decode_utf8


def read_prompt(prompt: str) -> str:
    """The prompt text: the argument itself, or standard input for '-' (bytes checked)."""
    text = (decode_utf8(read_stdin("give the prompt with --prompt TEXT"), "standard input") if prompt == "-"
            else check_text(prompt, "the --prompt argument"))
    if not text.strip():
        raise InputError("prompt is empty" + (" (nothing on standard input)" if prompt == "-" else ""))
    return text


def check_generation(num_draft_tokens: int, prefill_chunk: Optional[int] = None) -> None:
    """The command's own numbers (the request's options are checked as they are parsed)."""
    check_prefill_chunk(prefill_chunk)
    check_draft_length(num_draft_tokens, "--num-draft-tokens")


def check_bench(max_tokens: int, repeats: int, mlx_lm_draft: bool, compare_mlx_lm: bool) -> None:
    """bench's own numbers and option pairs."""
    check_numbers(repeats, max_tokens)
    if mlx_lm_draft and not compare_mlx_lm:
        raise InputError("--mlx-lm-draft only applies with --compare-mlx-lm")


def check_positive(value: float, option: str) -> None:
    """A finite number above zero."""
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{option} must be a finite number > 0, got {value}")


def _click_errors() -> object:
    """The click that typer runs on (its own copy in recent typer versions), for its errors."""
    return sys.modules[typer.BadParameter.__module__]


def run(app: typer.Typer, argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; usage errors (unknown option, a value of the wrong type, a missing
    argument) become one `error:` line and exit code 2. Returns the exit code."""
    usable_streams()  # first: before anything opens a file
    errors = _click_errors()
    command = typer.main.get_command(app)
    try:
        with sigterm_unwinds():
            code = command.main(args=list(argv) if argv is not None else None, prog_name="mlxspec",
                                standalone_mode=False)
    except getattr(errors, "NoArgsIsHelpError", ()) as exc:  # `mlxspec` alone: the help
        typer.echo(exc.format_message(), err=True)
        return 2
    except errors.UsageError as exc:
        name = exc.ctx.command_path if exc.ctx is not None else "mlxspec"
        error_line(f"{exc.format_message()} (see `{name} --help`)")
        return 2
    except typer.Abort as exc:  # Ctrl-C or SIGTERM outside a command (click's own handling)
        typer.echo("interrupted", err=True)
        return exit_code(exc.__context__ or KeyboardInterrupt())
    except errors.ClickException as exc:
        error_line(exc.format_message())
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # an I/O failure no check could foresee (a full /dev/full, a vanished disk)
        error_line(f"{exc.filename or 'writing the output'}: {exc.strerror or exc}")
        return 1
    except Exception as exc:  # a bug, not bad input: still one line; the traceback on request
        if os.environ.get("MLXSPEC_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        error_line(f"internal error ({type(exc).__name__}: {first}); please report it "
                   "(MLXSPEC_DEBUG=1 shows the traceback)")
        return 1
    return code if isinstance(code, int) else 0
