"""One model across several processes or Macs: pipeline parallelism on `mx.distributed`.

Start every rank with `mlx.launch` (ring backend over TCP: Ethernet, Thunderbolt, or
loopback on one machine)::

    mlx.launch -n 2 --backend ring --python .venv/bin/python -- -m mlxspec generate --pipeline \\
        --model M [--draft D] --prompt "..."

Each rank loads only its blocks (`stages`); rank 0 runs the engine as a single process
would, the other ranks's blocks being one remote layer of its model (`link`), so plain and
speculative decoding work unchanged: the draft runs on rank 0, the k+1 positions of a
verification pass go through every rank in one pass, every rank rolls back the same
positions. A rank that never connects, dies or is stopped ends the others with one line.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx

from ..errors import InputError, MlxspecError
from ..hub import resolve
from ..models import Model
from ..load import model_tokenizer
from ..text import Tokenizer
from .hostfile import read_ring
from .link import LeadModel, Link, serve
from .stages import check_agreement, load_stage, split_layers

__all__ = ["LeadModel", "PipelineError", "close", "connect", "load_lead", "lost_peers", "serve_rank", "split_layers"]

MAX_CONNECT_WAIT = 1e6  # seconds; the watchdog's select() overflows far beyond


class PipelineError(MlxspecError):
    """Another rank of the pipeline could not be reached, exited or was stopped."""


def connect(timeout: float = 60.0) -> Any:
    """Join the ring `mlx.launch` set up (its MLX_RANK / MLX_HOSTFILE environment, checked
    first: `hostfile`); a rank still alone after `timeout` seconds exits with one line.
    Returns the group (2+ ranks)."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= MAX_CONNECT_WAIT):
        raise InputError(f"the connect timeout (--connect-timeout) must be a number of seconds in (0, {MAX_CONNECT_WAIT:g}], got {timeout!r}")
    ring = read_ring(os.environ)
    if not mx.distributed.is_available():
        raise InputError("this MLX build has no distributed backend")
    _quiet_ring_errors()
    watchdog = subprocess.Popen([sys.executable, "-m", "mlxspec.pipeline.watchdog", str(os.getpid()), str(timeout),
                                 str(ring.rank)], stdin=subprocess.PIPE)
    try:
        group = mx.distributed.init(strict=True, backend="ring")
    except (RuntimeError, ValueError) as exc:  # MLX's bind, connect and ring-shape errors
        raise PipelineError(f"cannot join the pipeline ({exc})") from None
    finally:
        watchdog.stdin.close()
        watchdog.wait()
    signal.signal(signal.SIGTERM, _stopped)
    return group


def _quiet_ring_errors() -> None:
    """This process's standard error through `quiet`, which drops MLX's per-socket lines."""
    sys.stderr.flush()
    read, write = os.pipe()
    subprocess.Popen([sys.executable, "-m", "mlxspec.pipeline.quiet"], stdin=read)
    os.dup2(write, 2)
    os.close(read)
    os.close(write)


def _stopped(signum: int, frame: Any) -> None:
    """mlx.launch stops the other ranks when one exits with an error: say so and leave at
    once (unwinding could wait on passes the gone rank will never answer)."""
    sys.stdout.flush()
    os.write(2, b"error: stopped: another rank of the pipeline exited (mlx.launch then stops the rest)\n")
    os._exit(1)


def lost_peers(exc: BaseException) -> bool:
    """Whether `exc` is MLX's ring backend reporting a rank gone (its socket closed)."""
    return isinstance(exc, RuntimeError) and str(exc).startswith("[ring]")


@contextmanager
def pipeline_errors(rank: int) -> Iterator[None]:
    """MLX's errors about a lost rank as one `PipelineError` line naming this rank."""
    try:
        yield
    except RuntimeError as exc:
        if not lost_peers(exc):
            raise
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # leaving anyway: a launcher's stop must not cut this line short
        raise PipelineError(f"pipeline rank {rank} lost the connection to another rank: it exited or was "
                            "killed (see its output)") from None


def serve_rank(model: str | Path, group: Any, dtype: mx.Dtype | None = None, dequantize: bool = False) -> None:
    """On ranks 1..n-1: load this rank's blocks of `model`, then serve rank 0 until it stops."""
    with pipeline_errors(group.rank()):
        stage, mine = load_stage(resolve(model), group.rank(), group.size(), dtype, dequantize)
        check_agreement(mine, group)
        serve(stage, mine[5], group)


def load_lead(model: str | Path, group: Any, dtype: mx.Dtype | None = None,
              dequantize: bool = False) -> tuple[Model, Tokenizer]:
    """On rank 0: its part of `model`, the other ranks' blocks attached as one remote layer,
    and the tokenizer. The engine uses it as any model; `close` stops the other ranks."""
    folder = resolve(model)
    with pipeline_errors(0):
        stage, mine = load_stage(folder, 0, group.size(), dtype, dequantize)
        check_agreement(mine, group)
    stage.attach(Link(group), mine[0])
    return stage, model_tokenizer(folder, stage)


def close(model: Model) -> None:
    """Stop the other ranks of `model`'s pipeline (nothing for a model in one process)."""
    if isinstance(model, LeadModel) and model.link is not None:
        with pipeline_errors(0):
            model.link.close()
