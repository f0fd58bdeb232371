"""`mlxspec serve` in a subprocess on a free loopback port, for the server's tests: its log
(stdout and stderr) goes to a file the tests read, and raw HTTP reaches it where the
`openai` client would refuse to send what a hostile client sends."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlxspec serve` in a subprocess on a free loopback port."""

    def __init__(self, model: Path | None, *args: str, cache: Path) -> None:
        """`model` None: the arguments say what to serve (`--demo`)."""
        import openai

        self.port = free_port()
        env = dict(os.environ, MLXSPEC_CACHE=str(cache))
        cmd = [sys.executable, "-m", "mlxspec", "serve", *(["--model", str(model)] if model else []), "--port",
               str(self.port), "--name", MODEL, *args]
        self.log_path = cache / f"server-{self.port}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                self.get("/health")
                break
            except OSError:
                time.sleep(0.2)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=120)

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Any request as given: the status and the body's bytes."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    def open(self, path: str, body: dict) -> socket.socket:
        """A POST of `body` sent on a socket of its own, the answer left unread."""
        data = json.dumps(body).encode()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return sock

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def sse_events(reader, count: int | None = None) -> list[str]:
    """The `data:` payloads read from a raw HTTP stream: `count` of them, or all until it ends."""
    events = []
    while count is None or len(events) < count:
        line = reader.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events.append(line[len(b"data: "):].decode().strip())
    return events


def wait_until(condition, timeout: float = 60, what: str = "the condition") -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds (a bound, not a speed)."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.01)
