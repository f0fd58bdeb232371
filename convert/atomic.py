"""Output folders that appear whole or not at all.

Work happens in a hidden sibling `.NAME.mlxspec-tmp-PID`; on success it is renamed to
NAME (an existing NAME is only replaced with `force`). An exception removes the
temporary folder; a killed process leaves it behind, and the next run removes every
such folder whose process is gone."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlxspec.errors import InputError

_TAG = ".mlxspec-tmp-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete leftovers of killed runs that wrote to `out`; return what was removed."""
    removed = []
    for tmp in out.parent.glob(f".{out.name}{_TAG}*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def check_writable(out: Path, force: bool) -> None:
    """Refuse an existing `out` without `force` (before any work is done)."""
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")


@contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes `out` when the block succeeds."""
    out = out.resolve()
    check_writable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}{_TAG}{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}{_TAG}old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
