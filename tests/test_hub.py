"""How a name is read (`mlxspec.hub`): a path on disk, a path that does not exist, or a Hub
repo id; no network is noticed within seconds and every failure is one line that says which
reading was taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from mlxspec import hub
from mlxspec.errors import ConfigError


@pytest.fixture
def no_fetch(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a local path was taken for a Hub repo id")

    monkeypatch.setattr(hub, "fetch", fail)


@pytest.mark.parametrize("name", ["./org/model", "../org/model", "/abs/org/model", "~/org/model", "a/b/c",
                                  "org/model.gguf", "org\\model", "just-a-name", "org/..", "-org/model"])
def test_names_that_read_as_paths_are_never_fetched(name, no_fetch):
    with pytest.raises(ConfigError, match="no such folder"):
        hub.resolve(name)


def test_a_local_folder_wins_over_a_repo_id_and_a_path_object_is_never_fetched(tmp_path, monkeypatch, no_fetch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub.resolve("org/model").resolve() == tmp_path / "org" / "model"
    from pathlib import Path

    with pytest.raises(ConfigError, match="no such folder"):
        hub.resolve(Path("org/other"))
    with pytest.raises(TypeError, match="folder path or a Hugging Face repo id"):
        hub.resolve(b"org/model")


def test_without_network_a_repo_id_fails_at_once_in_one_line(tmp_path):
    """The Hub endpoint is a closed port on loopback: the probe is refused at once and no
    HTTP request (with huggingface-hub's retries) is made."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "cache")}
    env.pop("HF_HUB_OFFLINE", None)
    for args in (["convert", "no-such-org/no-such-model", "-o", str(tmp_path / "out")],
                 ["generate", "-m", "no-such-org/no-such-model", "-p", "hi"]):
        res = subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines() == [
            "error: no-such-org/no-such-model: no local folder of that name, so taken for a Hugging Face repo id; "
            "the Hub cannot be reached (127.0.0.1: Connection refused) and it is not in the Hugging Face cache"]
    assert not (tmp_path / "out").exists()


def test_the_probe_is_bounded_even_when_the_network_hangs(monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    assert hub.hub_unreachable(timeout=0.2).endswith("no answer within 0.2 s")


@pytest.mark.parametrize("error, message", [
    ("RepositoryNotFoundError", "the Hub has no such repo"),
    ("GatedRepoError", "it is gated"),
    ("RevisionNotFoundError", "no such revision"),
    ("ConnectError", "the Hub answered with an error (ConnectError: reset by peer)"),
])
def test_hub_errors_are_one_line(error, message, monkeypatch):
    import huggingface_hub
    import huggingface_hub.errors as errors

    def raise_it(self, repo, revision=None):
        if error == "ConnectError":
            raise type("ConnectError", (Exception,), {})("reset by peer\nmore detail")
        cls = getattr(errors, error)
        exc = cls.__new__(cls)
        Exception.__init__(exc, "404 Client Error")
        raise exc

    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", raise_it)
    with pytest.raises(ConfigError) as exc:
        hub.resolve("some-org/some-model")
    text = str(exc.value)
    assert "taken for a Hugging Face repo id" in text and message in text and "\n" not in text


@pytest.mark.parametrize("name, message", [("x" * 300, "File name too long"), ("~nosuchuser/model", "no such folder"),
                                           ("", "the model path is empty"), ("a\0b", "embedded null")])
def test_odd_names_are_one_line(name, message, no_fetch):
    from mlxspec.errors import MlxspecError

    with pytest.raises(MlxspecError, match=message):
        hub.resolve(name)
