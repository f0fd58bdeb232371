"""The engine thread: the one thread that runs MLX for the server. Requests arrive as
batch rows on a queue (a request's n choices as n rows, which join together after one
prefill of their prompt); between steps the thread lets waiting requests join the batch
(up to `max_rows` rows) and drops the rows whose clients went away. Each row's steps are
handed back to the caller's event loop as they come, tagged with its choice's index.

Everything MLX computes for the server happens on this thread, the calibration and the
batch's own arrays included: MLX keeps a stream per thread, and arrays or compiled
functions built on one thread and run on another are what it handles worst."""

from __future__ import annotations

import asyncio
import copy
import queue
import threading
from dataclasses import replace
from typing import Any, Callable

from ..engine import Batch, Row, Session
from ..engine.stats import GenerationStep
from ..errors import MlxspecError
from .errors import RequestError
from .request import Asked


class QueueFull(MlxspecError):
    """Too many requests are waiting; the server answers 429."""


class Closing(MlxspecError):
    """The server is shutting down; a request that arrives now gets a 503."""


class Engine:
    """Runs a session's requests in one continuous batch on a thread of its own."""

    def __init__(self, session: Session, max_rows: int = 8, max_queue: int = 64,
                 warm_up: Callable[[Session], None] | None = None) -> None:
        self.session, self.max_rows, self.max_queue = session, max_rows, max_queue
        self.warm_up = warm_up
        self.batch: Batch | None = None
        self.drafting = session.draft is not None
        self.inbox: queue.Queue[list[Row]] = queue.Queue()  # a request's rows (its choices)
        self._held: list[Row] | None = None  # the next request, waiting for room in the batch
        self._stop, self.ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlxspec-engine", daemon=True)
        self.error: BaseException | None = None
        self.closing = False  # set at shutdown: no request is taken any more
        self.peak_rows = 0  # the most rows decoded together so far
        self.generated = 0  # tokens generated, all rows together
        self.cancelled = 0  # rows cut short (their clients left, or the server stopped)

    def start(self) -> None:
        """Start the thread (once) and wait until it has warmed up; re-raises a failure there."""
        if not self._thread.is_alive() and not self.ready.is_set():
            self._thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 30) -> None:
        """End the thread after its current step (waiting for it at most `timeout` seconds)."""
        self.closing = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    @property
    def running(self) -> int:
        return len(self.batch.rows) if self.batch is not None else 0

    @property
    def waiting(self) -> int:
        return self.inbox.qsize() + (self._held is not None)

    @property
    def prefilled(self) -> int:
        """Prompt tokens the target has prefilled (not taken from a cache), all requests together."""
        return self.batch.prefilled if self.batch is not None else 0

    def submit(self, asked: Asked, prompt: Any, loop: asyncio.AbstractEventLoop, out: asyncio.Queue) -> list[Row]:
        """Check a request (raising `InputError` etc. at once) and queue its rows, one per
        choice; each row's steps, then None (finished) or an exception, arrive on `out` as
        (choice index, item)."""
        if self.closing:
            raise Closing("the server is shutting down")
        if self.waiting >= self.max_queue:
            raise QueueFull(f"{self.waiting} requests are waiting (--max-queue {self.max_queue}); try again shortly")
        n = asked.options.n
        if n > self.max_rows:
            raise RequestError(f"n must be at most {self.max_rows} on this server (its --max-batch), got {n}", "n")
        request = self.session.request(prompt, asked.options, speculative=asked.speculative,
                                       num_draft_tokens=asked.num_draft_tokens)
        rows = []
        for i in range(n):
            send = self._sender(loop, out, i)
            row = self.session.row(request, send, i)
            row.on_finish = lambda row=row, send=send: self._finished(row, send)
            rows.append(row)
            if request.budget == 0:
                send(None)
        if request.budget > 0:
            self.inbox.put(rows)
        return rows

    def _sender(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue,
                index: int) -> Callable[[GenerationStep | BaseException | None], None]:
        """What hands a row's steps to its handler's event loop as (`index`, item), counting
        tokens; once the loop has closed (the server stopped) there is no one left to hand them to.
        A step goes with a copy of its stats as they are now: the row's own go on changing here
        (a round's earlier tokens would read as finished once its last one is)."""
        def send(item: GenerationStep | BaseException | None) -> None:
            if isinstance(item, GenerationStep):
                self.generated += 1
                item = replace(item, stats=copy.copy(item.stats))
            try:
                loop.call_soon_threadsafe(out.put_nowait, (index, item))
            except RuntimeError:  # the loop has closed
                pass

        return send

    def _finished(self, row: Row, send: Callable[[None], None]) -> None:
        """A row left the batch (or never joined it): counted, and its handler told."""
        if row.cancelled:
            self.cancelled += 1
        send(None)

    def _admit(self) -> None:
        """Let waiting requests join, in order, while their rows fit in the batch."""
        block = not self.batch.rows
        while True:
            try:
                rows = self._held or (self.inbox.get(timeout=0.05) if block else self.inbox.get_nowait())
            except queue.Empty:
                return
            block, self._held = False, None
            for row in (r for r in rows if r.cancelled):
                row.finish()
            rows = [row for row in rows if not row.cancelled]
            if len(self.batch.rows) + len(rows) > self.max_rows:
                self._held = rows  # first in line once rows leave
                return
            try:
                if rows:
                    self.batch.add(*rows)
            except Exception as error:  # a request that cannot run fails alone
                for row in rows:
                    row.emit(error)
                    row.finish()

    def _loop(self) -> None:
        try:
            self.batch = self.session.open_batch()
            if self.warm_up is not None:
                self.warm_up(self.session)
        except BaseException as error:  # reported by `start`
            self.error = error
            return
        finally:
            self.ready.set()
        while not self._stop.is_set():
            self._admit()
            if not self.batch.rows:
                continue
            self.peak_rows = max(self.peak_rows, len(self.batch.rows))
            try:
                self.batch.step()
            except Exception as error:  # never leave clients waiting: fail the batch, keep serving
                for row in self.batch.rows:
                    row.emit(error)
                    row.cancel()
                self.batch.drop_finished()
