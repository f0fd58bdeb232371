"""`mlxspec chat` and `mlxspec serve`: a conversation on the terminal, and the
OpenAI-compatible server. Both keep one session: its prompt cache makes each turn (and
each request that repeats an earlier one's beginning) prefill only what is new."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import mlx.core as mx
import typer

from . import demo as demo_pair
from .console import colours, stats_line, write_step
from .engine import Calibration, GenerationOptions, SamplingParams, Session
from .errors import InputError
from .selection import select_models
from .standard_streams import read_stdin_line

HELP = ("/reset clears the conversation, /system TEXT sets the system prompt (and resets), "
        "/exit or Ctrl-D leaves")


def session_for(model: Optional[str], draft: Optional[str], use_demo: bool, num_draft_tokens: int,
                dequantize: bool, calibration: Calibration, adaptive: bool = True,
                prompt_cache: int = 4) -> tuple[Session, str]:
    """The session and the name clients call its model by (the demo: SmolLM2-135M-Instruct
    with the shipped feature draft, as `mlxspec demo` runs it)."""
    if prompt_cache < 0:
        raise InputError(f"--prompt-cache must be >= 0 (0 disables it), got {prompt_cache}")
    if use_demo:
        if model is not None or draft is not None:
            raise InputError("give --demo or --model/--draft, not both")
        model, draft = str(demo_pair.demo_target()), str(demo_pair.demo_draft())
    target, tokenizer, loaded = select_models(model, draft, None, False, dequantize)
    name = "smollm2-135m-instruct" if use_demo else Path(model).name or model
    return Session(target, tokenizer, loaded, num_draft_tokens=num_draft_tokens, calibration=calibration,
                   draft_policy="cost" if adaptive else "fixed", prompt_cache_entries=prompt_cache), name


def chat_loop(session: Session, system: Optional[str], options: GenerationOptions, colour: bool, verbose: bool) -> None:
    """Read a line, answer it (streamed), until end of input or /exit."""
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    typer.echo(f"chat with {session.target.args.model_type or 'the model'}: {HELP}", err=True)
    while True:
        line = read_stdin_line()
        if line == "":  # end of input (or none: standard input closed)
            typer.echo("", err=True)
            return
        line = line.rstrip("\n")
        command, _, rest = line.strip().partition(" ")
        if command == "/exit":
            return
        if command == "/reset":
            messages = messages[:1] if messages and messages[0]["role"] == "system" else []
            typer.echo("(conversation cleared)", err=True)
            continue
        if command == "/system":
            messages = [{"role": "system", "content": rest}] if rest.strip() else []
            typer.echo("(system prompt set; conversation cleared)", err=True)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        reply, stats = [], None
        for step in session.stream_chat(messages, options):
            write_step(step, colour)
            reply.append(step.text)
            stats = step.stats
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})
        if verbose and stats is not None:
            typer.echo(f"prompt cache: {stats.prompt_cached_tokens} of {stats.prompt_tokens} prompt tokens reused\n"
                       + stats_line(stats), err=True)


def warm_up(session: Session) -> None:
    """Calibrate before the first request (greedy and sampled), so no client waits for it."""
    if session.draft is not None and session.draft_policy == "cost":
        for temperature in (0.0, 1.0):
            session.timings(SamplingParams(temperature))


def serve(session: Session, name: str, host: str, port: int, max_batch: int, max_queue: int,
          defaults: GenerationOptions) -> None:
    """Run the server until interrupted."""
    try:
        import uvicorn

        from .serve import Engine
        from .serve.app import create_app
    except ImportError as e:
        raise InputError(f"mlxspec serve needs the serve extra: pip install 'mlxspec[serve]' ({e.name} is missing)")
    engine = Engine(session, max_rows=max_batch, max_queue=max_queue, warm_up=warm_up)
    engine.start()
    app = create_app(engine, name, defaults)
    spec = "no draft" if not engine.drafting else "speculating inside the batch" + (
        "" if session.draft.batches else ", each row drafting alone (this kind of draft shares no pass)")
    typer.echo(f"serving {name} on http://{host}:{port}/v1 ({spec}; batches of up to {max_batch}; "
               f"device: {mx.default_device()})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["chat_loop", "colours", "serve", "session_for"]
