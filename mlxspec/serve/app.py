"""The HTTP side: OpenAI-compatible routes on Starlette. Every request is checked before it
is queued (a bad one gets a 400 and an OpenAI error body, a full queue a 429); steps come
back from the engine thread on an asyncio queue; a client that goes away cancels its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.options import GenerationOptions
from ..errors import MlxspecError
from . import openai as oa
from .engine import Engine, QueueFull

POLL = 0.25  # seconds between checks that a waiting client is still there


def fail(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    return JSONResponse(oa.error(message, kind, code), status_code=status)


class Routes:
    """The handlers, over one engine serving its session as model `model_id`; `defaults` are
    the options of a request whose body does not set them."""

    def __init__(self, engine: Engine, model_id: str, defaults: GenerationOptions) -> None:
        self.engine, self.model_id, self.defaults = engine, model_id, defaults

    async def health(self, request: Request) -> Response:
        engine = self.engine
        return JSONResponse({"status": "ok", "model": self.model_id, "running": engine.running,
                             "waiting": engine.waiting, "peak_running": engine.peak_rows,
                             "speculative": engine.drafting})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_id, "object": "model", "created": int(time.time()), "owned_by": "mlxspec"}]})

    async def chat(self, request: Request) -> Response:
        return await self.serve(request, "chat", oa.chat_prompt)

    async def completions(self, request: Request) -> Response:
        return await self.serve(request, "text", oa.completion_prompt)

    async def serve(self, request: Request, kind: str, prompt_of: Callable[[dict], Any]) -> Response:
        """Check, queue, and answer whole or as server-sent events."""
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return fail(400, f"the request body is not valid JSON: {e}")
        if not isinstance(body, dict):
            return fail(400, "the request body must be a JSON object")
        model = body.get("model")
        if model not in (None, "", self.model_id, "default"):
            return fail(400, f"model {model!r} is not served here; GET /v1/models lists {self.model_id!r}",
                        code="model_not_found")
        out: asyncio.Queue = asyncio.Queue()
        try:
            wants = oa.asked(body, self.defaults, kind == "chat")
            row = self.engine.submit(wants, prompt_of(body), asyncio.get_running_loop(), out)
        except QueueFull as e:
            return fail(429, str(e), "rate_limit_error")
        except MlxspecError as e:
            return fail(400, str(e))
        rid = oa.new_id("chatcmpl" if kind == "chat" else "cmpl")
        if body.get("stream"):
            usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")
            return StreamingResponse(self.events(request, row, out, kind, rid, bool(usage)),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        steps = [step async for step in self.steps(request, row, out)]
        if steps and isinstance(steps[-1], BaseException):
            return fail(500, f"generation failed: {steps[-1]}", "server_error")
        return JSONResponse(self.whole(kind, rid, steps, len(row.prompt)))

    def logprobs(self, kind: str, steps: list) -> dict | None:
        return (oa.chat_logprobs if kind == "chat" else oa.completion_logprobs)(self.engine.session.tokenizer, steps)

    def whole(self, kind: str, rid: str, steps: list, prompt_tokens: int) -> dict:
        """A whole completion from its steps."""
        stats = steps[-1].stats if steps else None
        return oa.completion(kind, rid, self.model_id, "".join(s.text for s in steps),
                             stats.finish_reason if stats else "length", stats, self.logprobs(kind, steps),
                             prompt_tokens)

    async def steps(self, request: Request, row: Any, out: asyncio.Queue) -> AsyncIterator[Any]:
        """The row's steps (an exception last if it failed); cancels the row if the client leaves."""
        try:
            while True:
                try:
                    item = await asyncio.wait_for(out.get(), POLL)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if item is None:
                    return
                yield item
                if isinstance(item, BaseException):
                    return
        finally:
            if not row.finished:
                row.cancel()

    async def events(self, request: Request, row: Any, out: asyncio.Queue, kind: str, rid: str,
                     usage: bool) -> AsyncIterator[str]:
        """Server-sent events: a chunk per step with text, then usage if asked, then [DONE]."""
        last = None
        if kind == "chat":
            yield _sse(oa.chunk(kind, rid, self.model_id, "", role=True))
        async for step in self.steps(request, row, out):
            if isinstance(step, BaseException):
                yield _sse(oa.error(f"generation failed: {step}", "server_error"))
                return
            last, logs, finish = step, self.logprobs(kind, [step]), step.stats.finish_reason
            if step.text or logs or finish:
                yield _sse(oa.chunk(kind, rid, self.model_id, step.text, finish, logs))
        if usage:
            done = oa.chunk(kind, rid, self.model_id, None)
            done["choices"], done["usage"] = [], oa.usage(last.stats if last else None, len(row.prompt))
            yield _sse(done)
        yield "data: [DONE]\n\n"


def create_app(engine: Engine, model_id: str, defaults: GenerationOptions | None = None) -> Starlette:
    """The app serving `engine`'s session as model `model_id` (see `Routes`); the engine
    thread starts with the app (if not started yet) and stops with it."""
    routes = Routes(engine, model_id, defaults or GenerationOptions(max_tokens=512, temperature=1.0))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    return Starlette(routes=[Route("/health", routes.health), Route("/v1/models", routes.models),
                             Route("/v1/chat/completions", routes.chat, methods=["POST"]),
                             Route("/v1/completions", routes.completions, methods=["POST"])], lifespan=lifespan)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
