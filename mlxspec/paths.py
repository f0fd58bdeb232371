"""Where mlxspec keeps what it measures and converts for itself, and how it reads a path a
user typed (`~` expanded where it can be; problems with the name itself are one error)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def cache_dir() -> Path:
    """$MLXSPEC_CACHE, else ~/.cache/mlxspec: the calibrations and the converted demo target."""
    return Path(os.environ.get("MLXSPEC_CACHE") or Path.home() / ".cache" / "mlxspec")


def user_path(value: str | Path, what: str = "path") -> Path:
    """`value` as a Path: `~` expanded (left as typed when there is no such home), and the
    name checked against the file system's limits (too long, a NUL byte) as one `InputError`."""
    if str(value) == "":
        raise InputError(f"the {what} is empty")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user with no such user, or no home directory at all
        path = Path(value)
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent: the caller says what that means
        pass
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, embedded NUL...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"{str(value)[:100]}{'...' if len(str(value)) > 100 else ''}: {reason}") from None
    return path
