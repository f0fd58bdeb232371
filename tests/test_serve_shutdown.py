"""How `mlxspec serve` starts and stops (serve/server.py): SIGTERM or SIGINT during a request
ends it at once (a stream with a final chunk saying why and [DONE], a whole answer with a
503), then the process exits 0 (SIGTERM) or 130 (SIGINT) with one line on stderr; an
address in use is one `error:` line naming it and a non-zero exit, before any model loads."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from serving import Server, sse_events, wait_until

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

TEXT = "/v1/completions"
GENEROUS = 30  # seconds: a bound that proves the shutdown does not hang, not a speed


def lines_after_start(log: str) -> list[str]:
    lines = log.strip().splitlines()
    assert lines[0].startswith("serving tiny on "), log
    return lines[1:]


def test_sigterm_ends_a_stream_with_a_final_event_and_exits_0_with_one_line(hf_full_dir, tmp_path):
    server = Server(hf_full_dir, cache=tmp_path)
    try:
        sock = server.open(TEXT, {"prompt": "Once upon a time", "max_tokens": 480, "temperature": 0,
                                       "stream": True})
        with sock, sock.makefile("rb") as reader:
            assert len(sse_events(reader, 3)) == 3
            server.proc.send_signal(signal.SIGTERM)
            rest = sse_events(reader)  # until the server closes the stream
        assert server.proc.wait(timeout=GENEROUS) == 0
    finally:
        server.stop()
    assert rest[-1] == "[DONE]", rest[-3:]
    final = json.loads(rest[-2])
    assert final["choices"][0]["finish_reason"] == "cancelled" and final["error"]["code"] == "server_shutdown"
    assert 3 + len(rest) - 2 < 480  # chunks, one a token at most: the stream was cut
    assert lines_after_start(server.log()) == ["stopped by SIGTERM (1 request in flight cut short)"]


def test_sigint_answers_a_whole_request_503_and_exits_130_with_one_line(hf_full_dir, tmp_path):
    server = Server(hf_full_dir, cache=tmp_path)
    try:
        sock = server.open(TEXT, {"prompt": "Once upon a time", "max_tokens": 480, "temperature": 0})
        wait_until(lambda: server.get("/health")["generated_tokens"] >= 3, GENEROUS, "the row generating")
        server.proc.send_signal(signal.SIGINT)
        with sock, sock.makefile("rb") as reader:
            status = reader.readline()
            answer = reader.read()
        assert server.proc.wait(timeout=GENEROUS) == 130
    finally:
        server.stop()
    assert b" 503 " in status, status
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "server_shutdown" and error["type"] == "server_error"
    assert lines_after_start(server.log()) == ["interrupted (1 request in flight cut short)"]


def test_an_address_in_use_is_one_error_line_and_a_nonzero_exit(hf_full_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "mlxspec", "serve", "--model", str(hf_full_dir), "--port",
                               str(port)], capture_output=True, text=True, timeout=GENEROUS)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(is another server running there?)"], done.stderr
    assert done.stdout == ""
