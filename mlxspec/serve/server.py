"""Running the app on uvicorn: the listening socket bound first (an address in use is one
`ListenError`, before any model is loaded), and a bounded shutdown. The first SIGINT or
SIGTERM ends every response in flight at once (`Routes.close`: streams get a final
chunk and [DONE]), uvicorn waits at most `GRACE` seconds for their connections to close,
then the engine thread stops; a second signal stops waiting. `run` returns the signal."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
from types import FrameType
from typing import Iterator

import uvicorn
from starlette.applications import Starlette

from ..errors import MlxspecError

GRACE = 3  # seconds uvicorn waits for connections to close once their responses were ended


class ListenError(MlxspecError):
    """The server cannot listen where asked (the address is in use, or not this machine's)."""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port`."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ListenError(f"cannot listen on {where}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = ("the address is already in use (is another server running there?)" if e.errno == errno.EADDRINUSE
                  else e.strerror or str(e))
        raise ListenError(f"cannot listen on {where}: {reason}") from None
    return sock


class Server(uvicorn.Server):
    """uvicorn's server with mlxspec's signal handling (see the module)."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app, self.signal = app, None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Take SIGINT and SIGTERM while serving; unlike uvicorn, do not raise them again after."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # the second: stop waiting
            self.force_exit = True
            return
        self.signal, self.should_exit = sig, True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.app.state.routes.close)


def run(app: Starlette, sock: socket.socket) -> int:
    """Serve `app` on `sock` until SIGINT or SIGTERM; the signal's number."""
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACE)
    server = Server(config, app)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return server.signal or signal.SIGTERM
