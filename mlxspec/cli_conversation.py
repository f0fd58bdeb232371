"""The `mlxspec chat` and `mlxspec serve` commands: their options, checked, handed to
`mlxspec.conversation`."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import closing
from typing import Optional

import typer

from . import conversation
from .chat_repl import chat_loop
from .arguments import check_generation
from .cli_options import DEQUANTIZE_HELP, DRAFT_HELP, NO_FIT_CHECK_HELP, RECALIBRATE_HELP, adapter_option, calibration_for
from .cli_kv import with_kv_options
from .cli_request import with_generation_options
from .console import colours
from .engine import GenerationOptions
from .errors import InputError
from .plan import FitRequest, check_fit
from .selection import dequantize_default
from .text.unicode import check_text


@with_generation_options(exclude=("n",), max_tokens=512)
@with_kv_options
def chat_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder or Hugging Face repo id."),
    draft: Optional[str] = typer.Option(None, "--draft", "--draft-model", "-d", help=DRAFT_HELP),
    use_demo: bool = typer.Option(False, "--demo", help="Chat with the embedded demo pair (SmolLM2-135M-Instruct and the shipped draft)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt (also /system TEXT in the chat)."),
    num_draft_tokens: int = typer.Option(4, "--num-draft-tokens", "-k", help="Most tokens drafted per round."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Colour accepted draft tokens green (on a terminal) and print stats after each answer."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help=DEQUANTIZE_HELP),
    recalibrate: bool = typer.Option(False, "--recalibrate", help=RECALIBRATE_HELP),
    adapter: Optional[str] = adapter_option(),
    no_fit_check: bool = typer.Option(False, "--no-fit-check", help=NO_FIT_CHECK_HELP + " Context counted: the model's, at most 4096 tokens."),
    options: GenerationOptions = GenerationOptions(max_tokens=512),
    kv: Optional[dict] = None,
) -> None:
    """Chat on the terminal: history kept, answers streamed, each turn prefilling only what is new."""
    check_generation(num_draft_tokens)
    if system is not None:
        check_text(system, "the --system argument")
    check_fit(model, draft, None, FitRequest(dequantize=dequantize_default(dequantize), draft_tokens=num_draft_tokens,
                                             **kv),
              skip=no_fit_check or use_demo, how=", the model's context up to 4096", adapter=adapter)
    session, _ = conversation.session_for(model, draft, use_demo, num_draft_tokens, dequantize_default(dequantize),
                                          calibration_for(recalibrate), kv=kv, adapter=adapter)
    chat_loop(session, system, options, colours(sys.stdout, verbose), verbose)


@with_generation_options(exclude=("logprobs", "response_format", "n"), max_tokens=512, temperature=1.0)
@with_kv_options
def serve_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder or Hugging Face repo id."),
    draft: Optional[str] = typer.Option(None, "--draft", "--draft-model", "-d", help=DRAFT_HELP),
    use_demo: bool = typer.Option(False, "--demo", help="Serve the embedded demo pair (SmolLM2-135M-Instruct and the shipped feature draft)."),
    served: Optional[str] = typer.Option(None, "--name", "--alias", help="The model id clients send and /v1/models lists (default: the model folder's name)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    num_draft_tokens: int = typer.Option(4, "--num-draft-tokens", "-k", help="Most tokens drafted per step."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="Choose each step's draft length from step times measured at the current batch size (0 = no drafting where it does not pay); --no-adaptive always drafts -k tokens."),
    max_batch: int = typer.Option(8, "--max-batch", help="Most requests decoded together; more wait in the queue."),
    max_queue: int = typer.Option(64, "--max-queue", help="Most requests waiting; beyond it requests get 429."),
    prompt_cache: int = typer.Option(4, "--prompt-cache", help="Caches of recent requests kept, so a request that begins like one of them (the next turn of a conversation) prefills only what is new; 0 disables. Each holds its request's keys and values."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help=DEQUANTIZE_HELP),
    recalibrate: bool = typer.Option(False, "--recalibrate", help=RECALIBRATE_HELP),
    adapter: Optional[str] = adapter_option(),
    no_fit_check: bool = typer.Option(False, "--no-fit-check", help=NO_FIT_CHECK_HELP + " Counted: --max-batch rows of the model's context, at most 4096 tokens each."),
    options: GenerationOptions = GenerationOptions(max_tokens=512, temperature=1.0),
    kv: Optional[dict] = None,
) -> None:
    """An OpenAI-compatible server: /v1/chat/completions, /v1/completions, /v1/models, /health.
    Concurrent requests share one batch, with speculative decoding inside it. The request
    options given here are the defaults of requests that do not set them (temperature 1 as
    OpenAI's)."""
    check_generation(num_draft_tokens)
    if not 0 < port < 65536:
        raise InputError(f"--port must be in 1..65535, got {port}")
    if max_batch < 1 or max_queue < 0:
        raise InputError("--max-batch must be >= 1 and --max-queue >= 0")
    if served is not None and not served.strip():
        raise InputError("--name is empty")
    check_fit(model, draft, None, FitRequest(batch=max_batch, dequantize=dequantize_default(dequantize),
                                             draft_tokens=num_draft_tokens, **kv),
              skip=no_fit_check or use_demo, how=f", --max-batch {max_batch}, the model's context up to 4096",
              adapter=adapter)
    with closing(conversation.listen(host, port)) as sock:  # before loading: an address in use fails at once
        session, name = conversation.session_for(model, draft, use_demo, num_draft_tokens,
                                                 dequantize_default(dequantize), calibration_for(recalibrate),
                                                 adaptive, prompt_cache, kv, adapter=adapter)
        stopped_by, cut = conversation.serve(session, served or name, sock, max_batch, max_queue, options)
    ended = f"{cut} request{'s' if cut != 1 else ''} in flight cut short" if cut else "no request in flight"
    interrupted = stopped_by == signal.SIGINT
    typer.echo(f"interrupted ({ended})" if interrupted else f"stopped by SIGTERM ({ended})", err=True)
    # MLX may abort in the interpreter's exit once a thread other than the main one ran it
    # (ml-explore/mlx#3126; the engine thread did, and has ended): leave without that exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130 if interrupted else 0)
