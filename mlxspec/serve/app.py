"""The HTTP side: OpenAI-compatible routes on Starlette. Every request is read within limits
and checked before it is queued (a bad one gets a 4xx and an OpenAI error body naming the
field, a full queue a 429); steps come back from the engine thread on an asyncio queue, each
tagged with its choice (a request with `n` choices streams them interleaved, by index).
A watcher per request cancels its rows the moment its client leaves, streamed or not, so
they leave the batch at the engine's next step; at shutdown (`Routes.close`) every response
in flight ends at once: a stream with a final chunk (finish_reason "cancelled", and an
error saying why) and [DONE], a whole answer with a 503. An unknown path or method gets a
JSON 404/405, and a fault of the server's own a JSON 500 (the only errors logged with a
traceback). `/` is a chat page (`web.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine import Row
from ..engine.options import GenerationOptions
from ..errors import MlxspecError
from . import openai as oa
from .body import BodyLimits, ClientLeft, read_json
from .engine import Closing, Engine, QueueFull
from .errors import RequestError, error
from .request import Asked, asked, chat_prompt, completion_prompt
from .tools import ToolReply, tool_use, with_tools
from .web import WebPage

SHUTDOWN = "the server is shutting down"


class End(enum.Enum):
    """Why a response ends before its row finished."""

    LEFT = "the client went away"
    CLOSING = SHUTDOWN


class Live:
    """A request in flight: its rows (one per choice), the queue their steps arrive on, and
    its disconnect watcher."""

    def __init__(self, rows: list[Row], out: asyncio.Queue, request: Request) -> None:
        self.rows, self.out = rows, out
        self.tools: list[ToolReply] | None = None  # per choice, the reply's tool calls, when tools were offered
        self.watcher = asyncio.create_task(self.watch(request))

    async def watch(self, request: Request) -> None:
        """Wait for the client to leave, then cancel the rows at once and end the response."""
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the connection broke some other way: no one is there either
            pass
        self.end(End.LEFT)

    def end(self, why: End) -> None:
        """Cancel the rows (they leave the batch at the next step) and end the response now."""
        for row in self.rows:
            row.cancel()
        self.out.put_nowait(why)


class Routes:
    """The handlers, over one engine serving its session as model `model_id`; `defaults` are
    the options of a request whose body does not set them."""

    def __init__(self, engine: Engine, model_id: str, defaults: GenerationOptions, limits: BodyLimits) -> None:
        self.engine, self.model_id, self.defaults, self.limits = engine, model_id, defaults, limits
        self.live: set[Live] = set()
        self.closing = False
        self.cut = 0  # responses ended by the shutdown

    async def health(self, request: Request) -> Response:
        engine = self.engine
        return JSONResponse({"status": "closing" if self.closing else "ok", "model": self.model_id,
                             "running": engine.running, "waiting": engine.waiting, "peak_running": engine.peak_rows,
                             "generated_tokens": engine.generated, "cancelled": engine.cancelled,
                             "prefilled_tokens": engine.prefilled,
                             "speculative": engine.drafting})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_id, "object": "model", "created": int(time.time()), "owned_by": "mlxspec"}]})

    async def chat(self, request: Request) -> Response:
        return await self.serve(request, "chat", chat_prompt)

    async def completions(self, request: Request) -> Response:
        return await self.serve(request, "text", completion_prompt)

    def close(self) -> None:
        """Shutdown: refuse new requests (503) and end every response in flight now."""
        self.closing = self.engine.closing = True
        self.cut = len(self.live)
        for live in list(self.live):
            live.end(End.CLOSING)

    async def serve(self, request: Request, kind: str, prompt_of: Callable[[dict], Any]) -> Response:
        """Check, queue, and answer whole or as server-sent events."""
        try:
            wants, live = await self.accept(request, kind, prompt_of)
        except ClientLeft:
            return Response(status_code=400)  # no one is left to read it
        except RequestError as e:
            return refused(e)
        except QueueFull as e:
            return fail(429, str(e), "rate_limit_error")
        except Closing as e:
            return fail(503, str(e), "server_error", "server_shutdown")
        except MlxspecError as e:  # what the session says of the prompt
            return fail(400, str(e), param="messages" if kind == "chat" else "prompt")
        rid = oa.new_id("chatcmpl" if kind == "chat" else "cmpl")
        if wants.stream:
            return StreamingResponse(self.events(live, kind, rid, wants.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        steps = [step async for step in self.steps(live)]
        last = steps[-1] if steps else None
        if last is End.CLOSING:
            return fail(503, f"{SHUTDOWN}: the request was cut after {len(steps) - 1} tokens", "server_error",
                        "server_shutdown")
        if last is End.LEFT:
            return Response(status_code=400)
        if isinstance(last, BaseException):
            return fail(500, f"generation failed: {last}", "server_error")
        answer = self.whole(kind, rid, steps, live)
        return JSONResponse(ToolReply.shape_whole(answer, live.tools) if live.tools else answer)

    async def accept(self, request: Request, kind: str, prompt_of: Callable[[dict], Any]) -> tuple[Asked, Live]:
        """The request read, checked and queued, watched from now on."""
        if self.closing:
            raise Closing(SHUTDOWN)
        body = await read_json(request, self.limits)
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise RequestError(f"'model' must be a string, got {type(model).__name__}", "model")
        if model not in (None, "", self.model_id, "default"):
            raise RequestError(f"model {model[:100]!r} is not served here; GET /v1/models lists {self.model_id!r}",
                               "model", code="model_not_found")
        session = self.engine.session
        wants = asked(body, self.defaults, kind == "chat", session.k_max, session.target.args.vocab_size)
        prompt = prompt_of(body)
        use = tool_use(body, session.tokenizer) if kind == "chat" else None
        wants, prompt = with_tools(use, wants, session.tokenizer, prompt)
        out: asyncio.Queue = asyncio.Queue()
        rows = self.engine.submit(wants, prompt, asyncio.get_running_loop(), out)
        live = Live(rows, out, request)
        live.tools = [ToolReply(use.fmt) for _ in rows] if use else None
        self.live.add(live)
        return wants, live

    def logprobs(self, kind: str, steps: list) -> dict | None:
        return (oa.chat_logprobs if kind == "chat" else oa.completion_logprobs)(self.engine.session.tokenizer, steps)

    def whole(self, kind: str, rid: str, steps: list[tuple[int, Any]], live: Live) -> dict:
        """A whole completion from its choices' (index, step) pairs."""
        per = [[step for i, step in steps if i == index] for index in range(len(live.rows))]
        choices = [oa.Choice("".join(s.text for s in own), own[-1].stats if own else None, self.logprobs(kind, own))
                   for own in per]
        return oa.completion(kind, rid, self.model_id, choices, len(live.rows[0].prompt))

    async def steps(self, live: Live) -> AsyncIterator[Any]:
        """The rows' steps as (choice index, step), as they come; last, if a row did not finish,
        an exception (it failed) or an `End` (handed over once the request is no longer
        watched, so a caller may stop there)."""
        running, item = len(live.rows), None
        try:
            while running:
                item = await live.out.get()
                if isinstance(item, End) or isinstance(item[1], BaseException):
                    break
                if item[1] is None:
                    running -= 1
                    continue
                yield item
            else:
                item = None
        finally:
            live.watcher.cancel()
            self.live.discard(live)
            for row in live.rows:
                if not row.finished:
                    row.cancel()
        if item is not None:
            yield item if isinstance(item, End) else item[1]

    async def events(self, live: Live, kind: str, rid: str, usage: bool) -> AsyncIterator[str]:
        """Server-sent events: a chunk per step with text (the choices' chunks interleaved, each
        with its index), then usage if asked, then [DONE]; a stream cut short ends with a
        chunk saying why (finish_reason "cancelled" for each choice not done) and [DONE]."""
        last: dict[int, Any] = {}
        if kind == "chat":
            for index in range(len(live.rows)):
                yield _sse(oa.chunk(kind, rid, self.model_id, "", role=True, index=index))
        async for item in self.steps(live):
            if item is End.LEFT:
                return
            if isinstance(item, (BaseException, End)):
                why = error(SHUTDOWN if item is End.CLOSING else f"generation failed: {item}", "server_error",
                            "server_shutdown" if item is End.CLOSING else None)
                done = [i for i, step in last.items() if step.finish_reason]
                cut = [oa.chunk(kind, rid, self.model_id, None, "cancelled", index=i)["choices"][0]
                       for i in range(len(live.rows)) if i not in done]
                yield _sse({**oa.chunk(kind, rid, self.model_id, None), "choices": cut, **why})
                yield "data: [DONE]\n\n"
                return
            index, step = item
            last[index], logs, finish = step, self.logprobs(kind, [step]), step.finish_reason
            if step.text or logs or finish:
                payload = oa.chunk(kind, rid, self.model_id, step.text, finish, logs, index=index,
                                   from_draft=step.from_draft)
                for shaped in live.tools[index].shape(payload) if live.tools else [payload]:
                    yield _sse(shaped)
        if usage:
            done = oa.chunk(kind, rid, self.model_id, None)
            stats = [last[i].stats if i in last else None for i in range(len(live.rows))]
            done["choices"], done["usage"] = [], oa.usage(stats, len(live.rows[0].prompt))
            yield _sse(done)
        yield "data: [DONE]\n\n"


def create_app(engine: Engine, model_id: str, defaults: GenerationOptions | None = None,
               limits: BodyLimits | None = None) -> Starlette:
    """The app serving `engine`'s session as model `model_id` (see `Routes`); the engine
    thread starts with the app (if not started yet) and stops with it. `app.state.routes`
    holds the handlers (`Routes.close` ends the responses in flight)."""
    routes = Routes(engine, model_id, defaults or GenerationOptions(max_tokens=512, temperature=1.0),
                    limits or BodyLimits())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop(timeout=3)

    app = Starlette(routes=[*WebPage().routes(), Route("/health", routes.health), Route("/v1/models", routes.models),
                            Route("/v1/chat/completions", routes.chat, methods=["POST"]),
                            Route("/v1/completions", routes.completions, methods=["POST"])],
                    exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan)
    app.state.routes = routes
    return app


def fail(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
         param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error response."""
    return JSONResponse(error(message, kind, code, param), status_code=status, headers=headers)


def refused(exc: RequestError) -> JSONResponse:
    """The response to a refused request."""
    return fail(exc.status, str(exc), exc.kind, exc.code, exc.param)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) as JSON."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return fail(404, f"Invalid URL ({where}): this server answers /v1/chat/completions, /v1/completions, "
                         "/v1/models, /health and / (a chat page)", code="not_found")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return fail(405, f"Method not allowed ({where}); allowed: {allowed}", code="method_not_allowed",
                    headers=exc.headers)
    return fail(exc.status_code, str(exc.detail), headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    """A fault of the server's own (logged with its traceback by uvicorn) as JSON."""
    return fail(500, f"internal server error: {type(exc).__name__}", "server_error")


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
