"""The chat page at `/`: plain HTML, CSS and JavaScript files shipped in
`mlxspec/assets/web/` (nothing built, nothing from a CDN), served as they are. The page lives
in the browser: it keeps the conversation, sends it whole to `/v1/chat/completions` each turn
and reads the streamed answer. A Content-Security-Policy lets it load only these files and
talk only to this server."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PAGE = "index.html"
PREFIX = "/web/"  # where the page's other files are served
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def web_folder() -> Path:
    """The folder of the page's files, inside the installed package."""
    return Path(str(resources.files("mlxspec") / "assets" / "web"))


class WebPage:
    """The page and its files (those of `folder` with a known type, by name: no other path
    of the disk can be asked for)."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or web_folder()
        self.files = {p.name: p for p in sorted(folder.iterdir()) if p.suffix in TYPES and p.is_file()}

    def routes(self) -> list[Route]:
        """GET `/` (the page) and GET `/web/NAME` (its files)."""
        return [Route("/", self.index), Route(PREFIX + "{name}", self.asset)]

    async def index(self, request: Request) -> Response:
        return self.file(PAGE)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.files:
            raise HTTPException(404)
        return self.file(name)

    def file(self, name: str) -> Response:
        """One file as it is on disk; `no-cache`: a browser asks again after an upgrade."""
        path = self.files[name]
        return Response(path.read_bytes(), media_type=TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": POLICY,
                                 "X-Content-Type-Options": "nosniff"})
