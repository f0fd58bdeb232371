"""Where a model comes from: a local path as it is, or a Hugging Face repo id fetched into
the HF cache (only the files loading or converting needs). Shared by `load` and `convert`.

How a name is read, in this order (the README says the same):
1. it exists on disk: a local file or folder;
2. it looks like a path (starts with `/`, `.`, `~`, holds more than one `/` or a `\\`, ends
   in `.gguf`/`.safetensors`/`.json`): a local path that does not exist, an error;
3. it has the form `org/name` (letters, digits, `-`, `_`, `.`): a Hub repo id, and every
   error says that this was assumed;
4. anything else: no such path.
Before asking the Hub, one quick probe (a few seconds at most) tells whether it can be
reached; without a network the HF cache is used, and a model not in it is one error line."""

from __future__ import annotations

import fnmatch
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from .errors import ConfigError, InputError, InputTypeError
from .paths import user_path

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_PATH_SUFFIXES = (".gguf", ".safetensors", ".json", ".bin", ".pth")
_ALWAYS = ["*.json", "tokenizer.model*", "*.jinja"]
PROBE_SECONDS = 3.0


def weight_patterns(files: list[str]) -> list[str]:
    """The weight files to fetch from a repo listing: HF safetensors first, then Mistral's
    consolidated safetensors, then PyTorch pickles (never two copies of the weights)."""
    for patterns in (["model*.safetensors"], ["consolidated*.safetensors"], ["pytorch_model*.bin"],
                     ["consolidated*.pth"], ["*.safetensors"]):
        if any(fnmatch.fnmatch(f, p) for f in files for p in patterns):
            return patterns
    return ["*.safetensors"]


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface-hub reads it."""
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def hub_unreachable(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the Hub cannot be reached (DNS, connection, timeout), or None when it can.
    Bounded by `timeout` even where name resolution itself hangs."""
    import huggingface_hub.constants

    try:
        url = urlparse(huggingface_hub.constants.ENDPOINT)
        host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    except ValueError as exc:
        return f"HF_ENDPOINT {huggingface_hub.constants.ENDPOINT!r} is not a usable URL ({exc})"
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{host}: {exc.strerror or exc}")
        except Exception as exc:  # a thread's failure must not go unreported: it means "not reachable"
            result.append(f"{host}: {type(exc).__name__}")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else f"{host}: no answer within {timeout:g} s"


def is_repo_id(name: str) -> bool:
    """Whether a name that is not on disk reads as a Hub repo id (`org/name`)."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith(_PATH_SUFFIXES)


def _hub_error(repo_id: str, exc: Exception) -> ConfigError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    said = f"{repo_id}: no local folder of that name, so taken for a Hugging Face repo id"
    if isinstance(exc, GatedRepoError):
        return ConfigError(f"{said}; it is gated: accept its terms on the Hub and log in (`hf auth login`)")
    if isinstance(exc, RepositoryNotFoundError):
        return ConfigError(f"{said}; the Hub has no such repo (or it is private: log in with `hf auth login`)")
    if isinstance(exc, RevisionNotFoundError):
        return ConfigError(f"{said}; the Hub has no such revision")
    first = (str(exc).strip().splitlines() or [""])[0]
    return ConfigError(f"{said}; the Hub answered with an error ({type(exc).__name__}: {first})")


def fetch(repo_id: str, revision: str | None = None) -> Path:
    """Download (or find in the HF cache) what converting `repo_id` needs.

    Honours `HF_HUB_OFFLINE`, `HF_HOME` and the cache; shows huggingface-hub's progress
    bars. Without a network, only the cache is used."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    why_offline = "HF_HUB_OFFLINE is set" if offline() else hub_unreachable()
    try:
        files = [] if why_offline else huggingface_hub.HfApi().list_repo_files(repo_id, revision=revision)
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=_ALWAYS + weight_patterns(files),
            local_files_only=bool(why_offline),
        )
    except LocalEntryNotFoundError:
        raise ConfigError(f"{repo_id}: no local folder of that name, so taken for a Hugging Face repo id; "
                          f"the Hub cannot be reached ({why_offline}) and it is not in the Hugging Face cache") from None
    except Exception as exc:  # huggingface-hub and its HTTP stack raise many types; all end here
        raise _hub_error(repo_id, exc) from None
    return Path(folder)


def resolve(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face repo id fetched into the HF cache
    (see the module docstring for how one is told from the other)."""
    if not isinstance(path_or_repo_id, (str, Path)):
        raise InputTypeError(f"expected a folder path or a Hugging Face repo id, got {type(path_or_repo_id).__name__}")
    name = str(path_or_repo_id)
    path = user_path(path_or_repo_id, "model path")
    if path.exists() and revision is not None:
        raise InputError(f"--revision applies to Hub repo ids; {path} is on this disk")
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{path} is a file; expected a model folder")
    if isinstance(path_or_repo_id, Path) or not is_repo_id(name):
        raise ConfigError(f"{path}: no such folder")
    return fetch(name, revision=revision)
