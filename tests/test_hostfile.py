"""The ring's hostfile and rank are checked before MLX reads them: every malformed one (MLX
crashes on some with SIGFPE, waits forever on others) is one `error:` line naming the file
and what is wrong, exit code 2; a well-formed one is read as MLX reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxspec.errors import InputError
from mlxspec.pipeline.hostfile import Ring, read_ring

A, B, C = "127.0.0.1:5001", "127.0.0.1:5002", "10.0.0.3:5003"


def ring(tmp_path: Path, content: str | bytes, rank: str = "0") -> Ring:
    path = tmp_path / "hosts.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return read_ring({"MLX_HOSTFILE": str(path), "MLX_RANK": rank})


@pytest.mark.parametrize("content, rank", [
    (json.dumps([[A], [B]]), "1"), (json.dumps([A, B, C]), "2"), (json.dumps([[A, C], [B, "127.0.0.1:6000"]]), "0")])
def test_a_ring_of_two_or_more_distinct_ranks_is_read(tmp_path, content, rank):
    read = ring(tmp_path, content, rank)
    assert read.rank == int(rank) and len(read.hosts) == len(json.loads(content))


@pytest.mark.parametrize("content, rank, says", [
    ("[]", "0", "lists 0 ranks"), ("", "0", "is empty"), ("\n", "0", "is empty"), (json.dumps([[A]]), "0", "lists 1 rank"),
    ("not json", "0", "is not JSON"), ("[[", "0", "is not JSON"), ("[" * 100000, "0", "not a JSON list"),
    (b"\xff\xfe[]", "0", "not valid UTF-8"), ('{"hosts": []}', "0", "must be a JSON list"),
    ('"127.0.0.1:5001"', "0", "must be a JSON list"), (json.dumps([[A], []]), "0", "non-empty list"),
    (json.dumps([[A], None]), "0", "non-empty list"), (json.dumps([[A], [5002]]), "0", '"IP:port" string'),
    (json.dumps([[A], {"ip": B}]), "0", "non-empty list"), (json.dumps([[A], ["127.0.0.1"]]), "0", "no port"),
    (json.dumps([[A], ["127.0.0.1:0"]]), "0", "no port"), (json.dumps([[A], ["127.0.0.1:99999"]]), "0", "no port"),
    (json.dumps([[A], ["127.0.0.1:50x"]]), "0", "no port"), (json.dumps([[A], ["mac2.local:5002"]]), "0", "IPv4"),
    (json.dumps([[A], ["[::1]:5002"]]), "0", "IPv4"), (json.dumps([[A], [A]]), "0", "again for rank 1"),
    (json.dumps([[A, B], [C]]), "0", "different numbers of addresses"),
    (json.dumps([[A], [B]]), "2", "MLX_RANK='2'"), (json.dumps([[A], [B]]), "-1", "MLX_RANK='-1'"),
    (json.dumps([[A], [B]]), "one", "MLX_RANK='one'"), (json.dumps([[A], [B]]), "1x", "MLX_RANK='1x'")])
def test_every_malformed_hostfile_or_rank_is_one_clear_error(tmp_path, content, rank, says):
    with pytest.raises(InputError, match="hostfile") as caught:
        ring(tmp_path, content, rank)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_hostfile_that_cannot_be_read_is_one_clear_error(tmp_path):
    for path, says in [(tmp_path / "missing.json", "cannot be read"), (tmp_path, "is not a file")]:
        with pytest.raises(InputError, match=says):
            read_ring({"MLX_HOSTFILE": str(path), "MLX_RANK": "0"})
    with pytest.raises(InputError, match="over"):
        ring(tmp_path, " " * (1 << 21))


@pytest.mark.parametrize("content", ["[]", json.dumps([["127.0.0.1:5001"]])])
def test_the_command_stops_with_one_line_before_joining(tmp_path, content):
    """MLX itself dies of SIGFPE on an empty list and waits forever on a single host."""
    (tmp_path / "hosts.json").write_text(content)
    env = {**os.environ, "MLX_HOSTFILE": str(tmp_path / "hosts.json"), "MLX_RANK": "0"}
    done = subprocess.run([sys.executable, "-m", "mlxspec", "generate", "--pipeline", "--model", "unused", "-p", "x"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("error: the hostfile") and len(done.stderr.splitlines()) == 1, done.stderr
