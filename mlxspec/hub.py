"""Where a model comes from: a local folder as it is, or a Hugging Face repo id fetched
into the HF cache (only the files loading or converting needs). Shared by `load` and
`convert`."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from .errors import ConfigError

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

_ALWAYS = ["*.json", "tokenizer.model*", "*.jinja"]


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


def fetch(repo_id: str, revision: str | None = None) -> Path:
    """Download (or find in the HF cache) what converting `repo_id` needs.

    Honours `HF_HUB_OFFLINE`, `HF_HOME` and the cache; shows huggingface-hub's progress bars."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        files = [] if offline() else huggingface_hub.HfApi().list_repo_files(repo_id, revision=revision)
    except HfHubHTTPError as exc:
        raise ConfigError(f"{repo_id}: Hugging Face Hub error: {str(exc).splitlines()[0]}") from None
    except OSError:
        files = []  # no network: fall back to the cache
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=_ALWAYS + weight_patterns(files),
            local_files_only=not files,
        )
    except LocalEntryNotFoundError:
        raise ConfigError(f"{repo_id}: not a local folder and not in the Hugging Face cache (offline?)") from None
    except HfHubHTTPError as exc:
        raise ConfigError(f"{repo_id}: Hugging Face Hub error: {str(exc).splitlines()[0]}") from None
    return Path(folder)


def resolve(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face repo id fetched into the HF cache
    (honours `HF_HUB_OFFLINE` and `HF_HOME`)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{path} is a file; expected a model folder")
    if not _REPO_ID.match(str(path_or_repo_id)) or str(path_or_repo_id).startswith("."):
        raise ConfigError(f"{path}: no such folder")
    return fetch(str(path_or_repo_id), revision=revision)
