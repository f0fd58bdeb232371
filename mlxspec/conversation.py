"""What `mlxspec chat` and `mlxspec serve` share, and the server: one session whose prompt
cache makes each turn (and each request that repeats an earlier one's beginning) prefill
only what is new. The terminal chat itself is `chat_repl`."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import mlx.core as mx
import typer

from . import demo as demo_pair
from .engine import Calibration, GenerationOptions, SamplingParams, Session
from .errors import InputError
from .selection import select_models


def session_for(model: Optional[str], draft: Optional[str], use_demo: bool, num_draft_tokens: int,
                dequantize: bool, calibration: Calibration, adaptive: bool = True,
                prompt_cache: int = 4, kv: dict | None = None,
                adapter: Optional[str] = None) -> tuple[Session, str]:
    """The session and the name clients call its model by (the demo: SmolLM2-135M-Instruct
    with the shipped feature draft, as `mlxspec demo` runs it); `kv`: its kv_bits and
    kv_group_size; `adapter` applies to the target."""
    if prompt_cache < 0:
        raise InputError(f"--prompt-cache must be >= 0 (0 disables it), got {prompt_cache}")
    if use_demo:
        if model is not None or draft is not None:
            raise InputError("give --demo or --model/--draft, not both")
        model, draft = str(demo_pair.demo_target()), str(demo_pair.demo_draft())
    target, tokenizer, loaded = select_models(model, draft, None, False, dequantize, adapter=adapter)
    name = "smollm2-135m-instruct" if use_demo else Path(model).name or model
    return Session(target, tokenizer, loaded, num_draft_tokens=num_draft_tokens, calibration=calibration,
                   draft_policy="cost" if adaptive else "fixed", prompt_cache_entries=prompt_cache, **(kv or {})), name


def warm_up(session: Session) -> None:
    """Calibrate before the first request (greedy and sampled), so no client waits for it."""
    if session.draft is not None and session.draft_policy == "cost":
        for temperature in (0.0, 1.0):
            session.timings(SamplingParams(temperature))


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the models load, so that an address in use is
    reported at once (the serve extra is needed from here on)."""
    try:
        from .serve.server import listen as bind
    except ImportError as e:
        raise InputError(f"mlxspec serve needs the serve extra: pip install 'mlxspec[serve]' ({e.name} is missing)")
    return bind(host, port)


def serve(session: Session, name: str, sock: socket.socket, max_batch: int, max_queue: int,
          defaults: GenerationOptions) -> tuple[int, int]:
    """Run the server on `sock` until SIGINT or SIGTERM: the signal, and how many requests in
    flight the shutdown cut short."""
    from .serve import Engine
    from .serve.app import create_app
    from .serve.server import run

    engine = Engine(session, max_rows=max_batch, max_queue=max_queue, warm_up=warm_up)
    engine.start()
    app = create_app(engine, name, defaults)
    spec = "no draft" if not engine.drafting else "speculating inside the batch" + (
        "" if session.draft.batches else ", each row drafting alone (this kind of draft shares no pass)")
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    typer.echo(f"serving {name} on {url}/v1 ({spec}; batches of up to {max_batch}; device: {mx.default_device()}); "
               f"a chat page at {url}/", err=True)
    stopped_by = run(app, sock)
    return stopped_by, app.state.routes.cut


__all__ = ["listen", "serve", "session_for"]
