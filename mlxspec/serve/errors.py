"""What the server answers when it does not answer a completion: OpenAI's error body
({"error": {"message", "type", "param", "code"}}), and `RequestError`, a request the server
refuses with a 4xx naming the field at fault."""

from __future__ import annotations

from ..errors import InputError

MAX_MESSAGE = 1000  # characters of an error message (one quoting a huge value is cut)


class RequestError(InputError):
    """A request the server refuses: its HTTP `status` (a 4xx), the body `param` at fault
    (None when it is the request as a whole), OpenAI's error `kind` and `code`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.status, self.kind, self.code = param, status, kind, code


def error(message: str, kind: str = "invalid_request_error", code: str | None = None,
          param: str | None = None) -> dict:
    """OpenAI's error body."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
